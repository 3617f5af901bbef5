package plugin_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
)

// TestOverviewDashboard runs every query of the provisioned overview
// dashboard, with its variables at "All", against the fixtures: each must
// succeed and return data.
func TestOverviewDashboard(t *testing.T) {
	raw, err := os.ReadFile("../../provisioning/dashboards/orbweaver-overview.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string            `json:"title"`
			Targets []json.RawMessage `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	if len(dash.Panels) < 8 {
		t.Fatalf("%d panels, want at least 8", len(dash.Panels))
	}
	e := newEnv(t, true)
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			// Grafana's "All" for $agent is the empty allValue.
			model := json.RawMessage(strings.ReplaceAll(string(target), "${agent}", ""))
			var meta struct {
				QueryType string `json:"queryType"`
			}
			if err := json.Unmarshal(model, &meta); err != nil {
				t.Fatal(err)
			}
			r := e.queries(t, backend.DataQuery{RefID: "A", QueryType: meta.QueryType, JSON: model, TimeRange: fullHour, Interval: time.Minute})["A"]
			if r.Error != nil {
				t.Errorf("panel %q: %v", p.Title, r.Error)
				continue
			}
			if len(r.Frames) == 0 {
				t.Errorf("panel %q: no frames", p.Title)
			}
		}
	}
}
