package plugin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/data"

	"github.com/orbweaver/orbweaver/controller/store"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/grafana-plugin/pkg/querybuilder"
)

// rollupAgents capture the generated calls, each in its own batches.
var rollupAgents = []string{"aaaaaaaa-0000-4000-8000-000000000001", "aaaaaaaa-0000-4000-8000-000000000002", "aaaaaaaa-0000-4000-8000-000000000003"}

// insertRollupCalls stores, through the controller's store (which keeps the
// rollups), three hours of varied calls from t0: 6 servers on two ports,
// clients, statuses with errors and missing responses, log-normal
// durations, and calls with unknown servers. The edges of half the batches
// are folded, the others pending.
func insertRollupCalls(t *testing.T, st *store.Store) {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, 12))
	const perBatch, batches = 300, 40
	for b := range batches {
		agent := rollupAgents[b%len(rollupAgents)]
		calls := make([]*orbweaverv1.HttpCall, perBatch)
		for i := range calls {
			start := time.Duration(rng.Int64N(int64(3 * time.Hour)))
			dur := time.Duration(math.Exp(rng.NormFloat64()*1.2+math.Log(15)) * float64(time.Millisecond))
			server := fmt.Sprintf("10.0.1.%d", 1+rng.IntN(6))
			status := []uint32{200, 200, 200, 200, 201, 404, 500, 503, 0}[rng.IntN(9)]
			c := call(fmt.Sprintf("10.0.2.%d", 1+rng.IntN(20)), uint32(40000+i), server, uint32(8080+rng.IntN(2)),
				"GET", "svc", "/api", status, start, dur)
			if rng.IntN(50) == 0 {
				c.ServerIp, c.ServerPort = nil, 0
			}
			calls[i] = c
		}
		if _, err := st.InsertCallBatch(context.Background(), &orbweaverv1.CallBatch{AgentId: agent, BootId: bootA, Sequence: uint64(b + 1), HttpCalls: calls}); err != nil {
			t.Fatal(err)
		}
		if b == batches/2 { // half the edges folded, half pending
			if _, err := st.FoldEdges(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestRollupsMatchCalls runs statistics and service maps the rollups cover
// from the rollups and from the calls ("exact") and compares: the same
// series, buckets, rates, error rates and bytes, and percentiles within
// querybuilder.PercentileRelativeError.
func TestRollupsMatchCalls(t *testing.T) {
	e := newEnv(t, true) // the fixture calls, and more
	st, err := store.Open(context.Background(), e.adminURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	insertRollupCalls(t, st)
	st.Close()

	aligned := backend.TimeRange{From: t0, To: t0.Add(time.Hour)}
	unaligned := backend.TimeRange{From: t0.Add(12*time.Minute + 12500*time.Millisecond), To: t0.Add(2*time.Hour + 7*time.Second)}
	all := backend.TimeRange{From: t0.Add(-time.Hour), To: t0.Add(4 * time.Hour)}
	shortRange := backend.TimeRange{From: t0.Add(65 * time.Second), To: t0.Add(115 * time.Second)} // no whole minute
	tests := []struct {
		name     string
		model    map[string]any
		tr       backend.TimeRange
		interval time.Duration
	}{
		{"rate aligned", map[string]any{}, aligned, time.Minute},
		{"every metric unaligned", map[string]any{"metrics": querybuilder.Metrics()}, unaligned, time.Minute},
		{"every metric 5 min", map[string]any{"metrics": querybuilder.Metrics()}, unaligned, 5 * time.Minute},
		{"by server, top 3", map[string]any{"metrics": querybuilder.Metrics(), "groupBy": []string{"server"}, "topN": 3}, unaligned, time.Minute},
		{"by server and agent, hourly", map[string]any{"metrics": []string{"rate", "p95", "p99", "error_rate"}, "groupBy": []string{"agent", "server"}, "topN": 100}, all, time.Hour},
		{"by agent, filtered", map[string]any{"metrics": []string{"p50", "bytes"}, "groupBy": []string{"agent"},
			"serverIp": "10.0.1.0/30", "serverPort": 8080}, unaligned, 2 * time.Minute},
		{"two servers", map[string]any{"metrics": []string{"rate", "p90"}, "server": []string{"10.0.1.1:8080", "10.0.1.2:8081"},
			"agentId": rollupAgents[:2]}, all, 10 * time.Minute},
		{"less than a whole minute", map[string]any{"metrics": []string{"p95"}}, shortRange, time.Minute},
		{"default interval over 5 h", map[string]any{"metrics": []string{"rate", "p50"}, "groupBy": []string{"server"}}, all, 0},
	}
	for _, tt := range tests {
		t.Run("stats "+tt.name, func(t *testing.T) {
			run := func(exact bool) *data.Frame {
				m := map[string]any{"queryType": "stats", "exact": exact}
				for k, v := range tt.model {
					m[k] = v
				}
				raw, _ := json.Marshal(m)
				r := e.queries(t, backend.DataQuery{RefID: "A", JSON: raw, TimeRange: tt.tr, Interval: tt.interval, MaxDataPoints: 100})["A"]
				return ok(t, r)[0]
			}
			rolled, exact := run(false), run(true)
			usesRollups := strings.Contains(rolled.Meta.ExecutedQueryString, "http_calls_1m")
			if want := tt.tr != shortRange; usesRollups != want {
				t.Errorf("reads the rollups: %v, want %v", usesRollups, want)
			}
			if strings.Contains(exact.Meta.ExecutedQueryString, "http_calls_1m") {
				t.Error("an exact query reads the rollups")
			}
			compareFrames(t, rolled, exact)
		})
	}
	for _, tr := range []backend.TimeRange{aligned, unaligned, all} {
		t.Run(fmt.Sprintf("service map %s", tr.From.Format("15:04:05.0")), func(t *testing.T) {
			run := func(exact bool) data.Frames {
				raw, _ := json.Marshal(map[string]any{"queryType": "serviceMap", "exact": exact, "limit": 500})
				return ok(t, e.queries(t, backend.DataQuery{RefID: "A", JSON: raw, TimeRange: tr})["A"])
			}
			rolled, exact := run(false), run(true)
			if !strings.Contains(rolled[0].Meta.ExecutedQueryString, "http_calls_1m") {
				t.Error("the nodes do not read the rollups")
			}
			if !strings.Contains(rolled[0].Meta.ExecutedQueryString, "http_edges_10m") {
				t.Error("the edges do not read the 10-minute rollups")
			}
			if strings.Contains(exact[0].Meta.ExecutedQueryString, "_1m") {
				t.Error("an exact service map reads the rollups")
			}
			for i := range rolled {
				compareFrames(t, rolled[i], exact[i])
			}
		})
	}
}

// compareFrames checks that got, from the rollups, has the fields and
// values of want, from the calls: equal except for percentiles (fields in
// ms named p*_ms, or the service map's p95 stats), which must be within the
// bound.
func compareFrames(t *testing.T, got, want *data.Frame) {
	t.Helper()
	if g, w := fieldNames(got), fieldNames(want); fmt.Sprint(g) != fmt.Sprint(w) {
		t.Fatalf("fields = %v\nwant %v", g, w)
	}
	gn, _ := got.RowLen()
	wn, _ := want.RowLen()
	if gn != wn {
		t.Fatalf("%d rows, want %d", gn, wn)
	}
	if gn == 0 {
		t.Fatal("no rows to compare")
	}
	worst := 0.0
	for i, gf := range got.Fields {
		wf := want.Fields[i]
		percentile := strings.HasSuffix(gf.Name, "_ms") || (gf.Config != nil && gf.Config.DisplayName == "p95")
		for r := range gn {
			gv, gok := gf.ConcreteAt(r)
			wv, wok := wf.ConcreteAt(r)
			if gok != wok {
				t.Errorf("%s row %d = %v, want %v", gf.Name, r, gv, wv)
				continue
			}
			if !gok {
				continue
			}
			if !percentile {
				if fmt.Sprint(gv) != fmt.Sprint(wv) {
					t.Errorf("%s%v row %d = %v, want %v", gf.Name, gf.Labels, r, gv, wv)
				}
				continue
			}
			g, w := gv.(float64), wv.(float64)
			e := math.Abs(g-w) / w
			worst = max(worst, e)
			if e > querybuilder.PercentileRelativeError {
				t.Errorf("%s%v row %d = %v, want %v within %.2f%% (%.2f%% off)", gf.Name, gf.Labels, r, g, w,
					100*querybuilder.PercentileRelativeError, 100*e)
			}
		}
	}
	t.Logf("%d rows, worst percentile error %.2f%%", gn, 100*worst)
}
