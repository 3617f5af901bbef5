package plugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/data"
	"github.com/grafana/grafana-plugin-sdk-go/experimental/datasourcetest"
	"github.com/jackc/pgx/v5"

	"github.com/orbweaver/orbweaver/controller/store"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/grafana-plugin/pkg/plugin"
	"github.com/orbweaver/orbweaver/internal/pgtest"
)

var uidPattern = regexp.MustCompile(`"datasourceUid": "orbweaver-uid-\d+"`)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

func TestMain(m *testing.M) { pgtest.Main(m) }

// Fixture times: every query covers [t0, t0+1h).
var (
	t0       = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	agentA   = "11111111-1111-4111-8111-111111111111"
	bootA    = "22222222-2222-4222-8222-222222222222"
	fullHour = backend.TimeRange{From: t0, To: t0.Add(time.Hour)}
)

// env is a database filled through the controller's store, and the plugin
// served over gRPC by the SDK's test server, connected as a read-only role.
type env struct {
	client   *datasourcetest.TestPluginClient
	settings backend.DataSourceInstanceSettings
	adminURL string
}

var roleSeq atomic.Int64

// newEnv creates the schema with store.Open (the controller's migrations),
// stores the fixture calls through store.InsertCallBatch and starts the
// plugin.
func newEnv(t *testing.T, fill bool) *env {
	t.Helper()
	ctx := context.Background()
	dbURL := pgtest.URL(t)
	if fill {
		st, err := store.Open(ctx, dbURL, nil)
		if err != nil {
			t.Fatalf("store.Open: %v", err)
		}
		defer st.Close()
		insertFixtures(t, st)
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	// A read-only login role, as production uses (roles are cluster-wide).
	n := roleSeq.Add(1)
	role := fmt.Sprintf("grafana_ro_%d", n)
	admin(t, dbURL,
		"CREATE ROLE "+role+" LOGIN PASSWORD 'ro-secret' IN ROLE orbweaver_reader")
	s := backend.DataSourceInstanceSettings{
		// A datasource per test: the instance manager caches by UID.
		ID: n, UID: fmt.Sprintf("orbweaver-uid-%d", n), Name: "Orbweaver", Updated: time.Now(),
		URL:                     u.Host,
		User:                    role,
		JSONData:                json.RawMessage(fmt.Sprintf(`{"database":%q,"sslmode":"disable"}`, strings.TrimPrefix(u.Path, "/"))),
		DecryptedSecureJSONData: map[string]string{"password": "ro-secret"},
	}
	return &env{client: servePlugin(t), settings: s, adminURL: dbURL}
}

// served is the plugin served for the whole test binary: the SDK's test
// server registers Prometheus collectors globally, so it can start once.
var served struct {
	once   sync.Once
	client *datasourcetest.TestPluginClient
	err    error
}

// servePlugin serves the plugin on a free local port with the SDK's gRPC
// test server, once per test binary, and returns a client.
func servePlugin(t *testing.T) *datasourcetest.TestPluginClient {
	t.Helper()
	served.once.Do(func() {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			served.err = err
			return
		}
		addr := l.Addr().String()
		l.Close()
		tp, err := datasourcetest.Manage(plugin.NewDatasource, datasourcetest.ManageOpts{Address: addr})
		served.client, served.err = tp.Client, err
	})
	if served.err != nil {
		t.Fatalf("serve plugin: %v", served.err)
	}
	return served.client
}

func admin(t *testing.T, dbURL string, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func at(d time.Duration) int64 { return t0.Add(d).UnixNano() }

func ip(s string) []byte { return net.ParseIP(s).To4() }

// call is an answered call from start, lasting dur (request 1 ms, response
// starts halfway).
func call(client string, cport uint32, server string, sport uint32, method, host, path string, status uint32, start, dur time.Duration) *orbweaverv1.HttpCall {
	c := &orbweaverv1.HttpCall{
		ClientIp: ip(client), ClientPort: cport, ServerIp: ip(server), ServerPort: sport,
		Method: method, Host: host, Path: path, HttpVersion: "1.1", Status: status,
		RequestStartNs: at(start), RequestEndNs: at(start + time.Millisecond),
		ResponseStartNs: at(start + dur/2), ResponseEndNs: at(start + dur),
		RequestHeaderSize: 100, RequestBodySize: 10, ResponseHeaderSize: 200, ResponseBodySize: 1000,
		ParseStatus: "ok",
	}
	if status == 0 {
		c.ResponseStartNs, c.ResponseEndNs, c.ResponseHeaderSize, c.ResponseBodySize = 0, 0, 0, 0
		c.ParseStatus = "no_response"
	}
	return c
}

// injectionText is an SQL injection attempt stored as call 6's
// identification and template.
const injectionText = `admin'); DELETE FROM http_calls; --`

// insertFixtures stores, in one batch (ids 1…8 in this order):
//
//	1 frontend 10.0.0.1 → orders 10.0.0.2:8080   GET /api/orders 200, 1.000 s + 200 ms
//	2 orders 10.0.0.2 → inventory 10.0.0.3:9090  GET /api/stock/42 200, 1.050 s + 50 ms (child of 1)
//	3 inventory 10.0.0.3 → pricing 10.0.0.4:80   GET /price 503, 1.060 s + 20 ms (child of 2)
//	4 10.0.0.9 → orders 10.0.0.2:8080            POST /api/orders 201, 1.150 s + 350 ms (overlaps 1)
//	5 10.0.0.1 → orders 10.0.0.2:8080            GET /api/orders/7, no response, 30 s
//	6 10.0.0.1 → orders 10.0.0.2:8080            GET an SQL injection path 404, 90 s + 10 ms
//	7 10.0.0.5 → orders 10.0.0.2:8081            GET /health 200, 1.052 s + 8 ms (other port)
//	8 10.0.0.1 → orders 10.0.0.2:8080            GET /api/orders 200, 2 h (outside the range)
//
// with the derived fields (identification, origin, template; token and
// credential flags):
//
//	1 alice          203.0.113.7   /api/orders
//	2 svc-orders     10.0.0.2      /api/stock/{id}    token expired
//	3 svc-inventory  10.0.0.3      /price             token not yet valid
//	4 bob            203.0.113.8   /api/orders        2 credentials, multiple
//	5 alice          198.51.100.1  /api/orders/{id}
//	6 injectionText  10.0.0.1      injectionText      no credentials
//	7 (none)         (none)        /health            no credentials
//	8 alice          203.0.113.7   /api/orders        token expired
//
// and agent A with two heartbeats.
func insertFixtures(t *testing.T, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	if _, err := st.UpsertAgent(ctx, &orbweaverv1.Hello{AgentId: agentA, BootId: bootA, Name: "edge-1", Hostname: "host-1",
		Version: "0.1.0", Mode: orbweaverv1.AgentMode_AGENT_MODE_INTERFACE}, t0.Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	for i, hb := range []*orbweaverv1.Heartbeat{
		{Capturing: true, Packets: 100, Bytes: 10000, CallsSent: 5, QueueDepth: 1, LastAckRttUs: 1500},
		{Capturing: true, Packets: 250, Bytes: 30000, KernelDrops: 2, QueueDrops: 1, CallsSent: 8, LastAckRttUs: 500},
	} {
		if err := st.InsertHeartbeat(ctx, agentA, hb, t0.Add(time.Duration(i+1)*10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	injection := call("10.0.0.1", 40004, "10.0.0.2", 8080, "GET", "orders", `/search'; DROP TABLE http_calls; --`, 404, 90*time.Second, 10*time.Millisecond)
	calls := []*orbweaverv1.HttpCall{
		call("10.0.0.1", 40001, "10.0.0.2", 8080, "GET", "orders", "/api/orders", 200, time.Second, 200*time.Millisecond),
		call("10.0.0.2", 50001, "10.0.0.3", 9090, "GET", "inventory", "/api/stock/42", 200, 1050*time.Millisecond, 50*time.Millisecond),
		call("10.0.0.3", 51000, "10.0.0.4", 80, "GET", "pricing", "/price", 503, 1060*time.Millisecond, 20*time.Millisecond),
		call("10.0.0.9", 40002, "10.0.0.2", 8080, "POST", "orders", "/api/orders", 201, 1150*time.Millisecond, 350*time.Millisecond),
		call("10.0.0.1", 40003, "10.0.0.2", 8080, "GET", "orders", "/api/orders/7", 0, 30*time.Second, 0),
		injection,
		call("10.0.0.5", 40005, "10.0.0.2", 8081, "GET", "orders", "/health", 200, 1052*time.Millisecond, 8*time.Millisecond),
		call("10.0.0.1", 40006, "10.0.0.2", 8080, "GET", "orders", "/api/orders", 200, 2*time.Hour, time.Millisecond),
	}
	calls[1].Traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	// Derived fields (migration 0007), as the agent sets them.
	derived := []struct {
		identification, origin, template string
		notYetValid, expired             bool
		credentials                      uint32
		multiple                         bool
	}{
		{"alice", "203.0.113.7", "/api/orders", false, false, 1, false},
		{"svc-orders", "10.0.0.2", "/api/stock/{id}", false, true, 1, false},
		{"svc-inventory", "10.0.0.3", "/price", true, false, 1, false},
		{"bob", "203.0.113.8", "/api/orders", false, false, 2, true},
		{"alice", "198.51.100.1", "/api/orders/{id}", false, false, 1, false},
		{injectionText, "10.0.0.1", injectionText, false, false, 0, false},
		{"", "", "/health", false, false, 0, false},
		{"alice", "203.0.113.7", "/api/orders", false, true, 1, false},
	}
	for i, d := range derived {
		c := calls[i]
		c.Identification, c.Template = d.identification, d.template
		if d.origin != "" {
			c.OriginIp = ip(d.origin)
		}
		c.TokenNotYetValid, c.TokenExpired = d.notYetValid, d.expired
		c.CredentialsCount, c.MultipleCredentials = d.credentials, d.multiple
	}
	res, err := st.InsertCallBatch(ctx, &orbweaverv1.CallBatch{AgentId: agentA, BootId: bootA, Sequence: 1, HttpCalls: calls})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != len(calls) {
		t.Fatalf("stored %d calls, want %d", res.Rows, len(calls))
	}
}

// query runs one query through the plugin's gRPC QueryData.
func (e *env) query(t *testing.T, queryType string, model map[string]any) backend.DataResponse {
	t.Helper()
	return e.queries(t, backend.DataQuery{RefID: "A", QueryType: queryType, JSON: mustJSON(t, model), TimeRange: fullHour, Interval: time.Minute, MaxDataPoints: 100})["A"]
}

func (e *env) queries(t *testing.T, qs ...backend.DataQuery) backend.Responses {
	t.Helper()
	resp, err := e.client.QueryData(context.Background(), &backend.QueryDataRequest{
		PluginContext: backend.PluginContext{OrgID: 1, PluginID: plugin.ID, DataSourceInstanceSettings: &e.settings},
		Queries:       qs,
	})
	if err != nil {
		t.Fatalf("QueryData: %v", err)
	}
	return resp.Responses
}

func (e *env) health(t *testing.T) *backend.CheckHealthResult {
	t.Helper()
	res, err := e.client.CheckHealth(context.Background(), &backend.CheckHealthRequest{
		PluginContext: backend.PluginContext{OrgID: 1, PluginID: plugin.ID, DataSourceInstanceSettings: &e.settings},
	})
	if err != nil {
		t.Fatalf("CheckHealth: %v", err)
	}
	return res
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// ok fails t when r is an error and returns its frames.
func ok(t *testing.T, r backend.DataResponse) data.Frames {
	t.Helper()
	if r.Error != nil {
		t.Fatalf("query failed: %v", r.Error)
	}
	return r.Frames
}

// goldenFrames compares the frames' JSON (schema, meta, values) with
// testdata/<name>.golden.json.
func goldenFrames(t *testing.T, name string, frames data.Frames) {
	t.Helper()
	var docs []json.RawMessage
	for _, f := range frames {
		raw, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, raw)
	}
	got, err := json.MarshalIndent(docs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	// Each test's datasource has its own UID (see newEnv).
	got = uidPattern.ReplaceAll(got, []byte(`"datasourceUid": "orbweaver-uid"`))
	path := filepath.Join("testdata", name+".golden.json")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s is missing: run go test -update", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("frames differ from %s (go test -update rewrites it); got:\n%s", path, got)
	}
}

// column returns the values of a field as []any (nil for NULL).
func column(t *testing.T, f *data.Frame, name string) []any {
	t.Helper()
	fld, _ := f.FieldByName(name)
	if fld == nil {
		t.Fatalf("frame %s has no field %s", f.Name, name)
	}
	out := make([]any, fld.Len())
	for i := range out {
		v, ok := fld.ConcreteAt(i)
		if ok {
			out[i] = v
		}
	}
	return out
}

func fieldNames(f *data.Frame) []string {
	var names []string
	for _, fld := range f.Fields {
		n := fld.Name
		if len(fld.Labels) > 0 {
			n += "{" + fld.Labels.String() + "}"
		}
		names = append(names, n)
	}
	return names
}
