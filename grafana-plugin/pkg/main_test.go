package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/backend/grpcplugin"
	"github.com/grafana/grafana-plugin-sdk-go/genproto/pluginv2"
	goplugin "github.com/hashicorp/go-plugin"

	"github.com/orbweaver/orbweaver/controller/store"
	"github.com/orbweaver/orbweaver/grafana-plugin/pkg/plugin"
	"github.com/orbweaver/orbweaver/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestExecutable builds the plugin executable and starts it as Grafana
// does: hashicorp/go-plugin with the SDK's handshake (protocol version 2),
// then checks health and runs a query over the dispensed gRPC clients.
func TestExecutable(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin executable")
	}
	ctx := context.Background()
	dbURL := pgtest.URL(t)
	st, err := store.Open(ctx, dbURL, nil)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	st.Close()

	bin := filepath.Join(t.TempDir(), "gpx_orbweaver_linux_amd64")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig: goplugin.HandshakeConfig{
			ProtocolVersion:  grpcplugin.ProtocolVersion,
			MagicCookieKey:   grpcplugin.MagicCookieKey,
			MagicCookieValue: grpcplugin.MagicCookieValue,
		},
		VersionedPlugins: map[int]goplugin.PluginSet{grpcplugin.ProtocolVersion: {
			"data":        &grpcplugin.DataGRPCPlugin{},
			"diagnostics": &grpcplugin.DiagnosticsGRPCPlugin{},
		}},
		Cmd:              exec.Command(bin),
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		SyncStdout:       os.Stderr,
		SyncStderr:       os.Stderr,
	})
	defer client.Kill()
	rpc, err := client.Client()
	if err != nil {
		t.Fatalf("start plugin: %v", err)
	}
	if v := client.NegotiatedVersion(); v != 2 {
		t.Fatalf("negotiated protocol version %d, want 2", v)
	}

	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	password, _ := u.User.Password()
	pctx := backend.PluginContext{OrgID: 1, PluginID: plugin.ID, DataSourceInstanceSettings: &backend.DataSourceInstanceSettings{
		ID: 1, UID: "orbweaver", Name: "Orbweaver", Updated: time.Now(),
		URL: u.Host, User: u.User.Username(),
		JSONData:                json.RawMessage(fmt.Sprintf(`{"database":%q,"sslmode":"disable"}`, strings.TrimPrefix(u.Path, "/"))),
		DecryptedSecureJSONData: map[string]string{"password": password},
	}}

	raw, err := rpc.Dispense("diagnostics")
	if err != nil {
		t.Fatal(err)
	}
	health, err := raw.(grpcplugin.DiagnosticsClient).CheckHealth(ctx, &pluginv2.CheckHealthRequest{PluginContext: backend.ToProto().PluginContext(pctx)})
	if err != nil {
		t.Fatalf("CheckHealth: %v", err)
	}
	if res := backend.FromProto().CheckHealthResponse(health); res.Status != backend.HealthStatusOk {
		t.Fatalf("health = %v %q", res.Status, res.Message)
	}

	raw, err = rpc.Dispense("data")
	if err != nil {
		t.Fatal(err)
	}
	req := &backend.QueryDataRequest{PluginContext: pctx, Queries: []backend.DataQuery{
		{RefID: "A", QueryType: "calls", JSON: json.RawMessage(`{"limit":5}`), TimeRange: backend.TimeRange{From: time.Now().Add(-time.Hour), To: time.Now()}},
		{RefID: "B", QueryType: "calls", JSON: json.RawMessage(`{"statusClass":"9xx"}`), TimeRange: backend.TimeRange{From: time.Now().Add(-time.Hour), To: time.Now()}},
	}}
	protoResp, err := raw.(grpcplugin.DataClient).QueryData(ctx, backend.ToProto().QueryDataRequest(req))
	if err != nil {
		t.Fatalf("QueryData: %v", err)
	}
	resp, err := backend.FromProto().QueryDataResponse(protoResp)
	if err != nil {
		t.Fatal(err)
	}
	a := resp.Responses["A"]
	if a.Error != nil || len(a.Frames) != 1 || a.Frames[0].Meta == nil || !strings.Contains(a.Frames[0].Meta.ExecutedQueryString, "FROM http_calls") {
		t.Fatalf("A = %+v", a)
	}
	if n, _ := a.Frames[0].RowLen(); n != 0 || len(a.Frames[0].Fields) != 25 {
		t.Fatalf("A: %d rows, %d fields; want 0 rows (empty database), 25 fields", n, len(a.Frames[0].Fields))
	}
	if b := resp.Responses["B"]; b.Error == nil || b.Status != backend.StatusBadRequest {
		t.Fatalf("B = %+v, want a 400 error", b)
	}
}
