package controller_test

// End-to-end tests: a real controller (gRPC on a loopback port) storing into
// a real Postgres, with real agents reading generated captures or capturing
// live on lo.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/orbweaver/orbweaver/agent"
	"github.com/orbweaver/orbweaver/controller"
	"github.com/orbweaver/orbweaver/internal/auth"
	"github.com/orbweaver/orbweaver/internal/pcapgen"
	"github.com/orbweaver/orbweaver/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func repoFile(t *testing.T, rel string) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", rel)
}

type env struct {
	t      *testing.T
	dbURL  string
	db     *pgxpool.Pool
	addr   string
	cancel context.CancelFunc
	done   chan error
}

// startController runs a controller on a free loopback port against dbURL.
func startController(t *testing.T, dbURL, listen string, opts ...func(*controller.Config)) *env {
	t.Helper()
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	e := &env{t: t, dbURL: dbURL, cancel: cancel, done: make(chan error, 1)}
	cfg := controller.Config{
		Listen:      listen,
		DatabaseURL: dbURL,
		Logger:      testLogger(t).With("component", "controller"),
		OnReady:     func(a net.Addr) { ready <- a },
	}
	for _, o := range opts {
		o(&cfg)
	}
	go func() { e.done <- controller.Run(ctx, cfg) }()
	select {
	case a := <-ready:
		e.addr = a.String()
	case err := <-e.done:
		t.Fatalf("controller did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("controller did not start within 30 s")
	}
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	e.db = pool
	t.Cleanup(func() { e.stop(); pool.Close() })
	return e
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	if err := <-e.done; err != nil {
		e.t.Errorf("controller: %v", err)
	}
}

func (e *env) count(t *testing.T, where string, args ...any) int {
	t.Helper()
	var n int
	q := "SELECT count(*) FROM http_calls"
	if where != "" {
		q += " WHERE " + where
	}
	if err := e.db.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("count calls: %v", err)
	}
	return n
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type runningAgent struct {
	a      *agent.Agent
	cancel context.CancelFunc
	done   chan error
}

func startAgent(t *testing.T, cfg agent.Config) *runningAgent {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	cfg.Logger = testLogger(t).With("component", "agent", "name", cfg.Name)
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningAgent{a: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop() })
	return r
}

func (r *runningAgent) stop() error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	return <-r.done
}

func readTruth(t *testing.T, path string) []pcapgen.Truth {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tr []pcapgen.Truth
	if err := json.Unmarshal(b, &tr); err != nil {
		t.Fatal(err)
	}
	return tr
}

type row struct {
	ClientIP, ServerIP     string
	ClientPort, ServerPort int
	Method, Path, Query    string
	Status                 int
}

func (r row) String() string {
	return fmt.Sprintf("%s:%d -> %s:%d %s %s?%s %d", r.ClientIP, r.ClientPort, r.ServerIP, r.ServerPort, r.Method, r.Path, r.Query, r.Status)
}

func (e *env) rows(t *testing.T, agentID string) []string {
	t.Helper()
	rs, err := e.db.Query(context.Background(), `SELECT host(client_ip), client_port, host(server_ip), server_port, method, path, query, coalesce(status, 0)
		FROM http_calls WHERE agent_id = $1`, agentID)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var r row
		if err := rs.Scan(&r.ClientIP, &r.ClientPort, &r.ServerIP, &r.ServerPort, &r.Method, &r.Path, &r.Query, &r.Status); err != nil {
			t.Fatal(err)
		}
		out = append(out, r.String())
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func truthRows(tr []pcapgen.Truth) []string {
	var out []string
	for _, x := range tr {
		out = append(out, row{x.ClientIP, x.ServerIP, x.ClientPort, x.ServerPort, x.Method, x.Path, x.Query, x.Status}.String())
	}
	sort.Strings(out)
	return out
}

func diffRows(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") == strings.Join(want, "\n") {
		return
	}
	t.Errorf("stored calls differ from the capture's ground truth (%d stored, %d expected)", len(got), len(want))
	gs := map[string]int{}
	for _, g := range got {
		gs[g]++
	}
	for _, w := range want {
		if gs[w] > 0 {
			gs[w]--
			continue
		}
		t.Errorf("  missing: %s", w)
	}
	for g, n := range gs {
		for range n {
			t.Errorf("  unexpected: %s", g)
		}
	}
}

func TestFileModeStoresEveryExchange(t *testing.T) {
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	e := startController(t, pgtest.URL(t), "", func(c *controller.Config) { c.MetricsListen = metricsAddr })
	pcap := repoFile(t, "testdata/pcaps/http_keepalive.pcap")
	truth := readTruth(t, strings.TrimSuffix(pcap, ".pcap")+".truth.json")
	r := startAgent(t, agent.Config{Controller: e.addr, Name: "file-agent", File: pcap, ExitWhenDone: true})
	select {
	case err := <-r.done:
		r.cancel = nil
		if err != nil {
			t.Fatalf("agent: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("file agent did not finish")
	}
	if len(truth) != 30 {
		t.Fatalf("fixture has %d exchanges, want 30", len(truth))
	}
	diffRows(t, e.rows(t, r.a.ID()), truthRows(truth))
	if n := e.count(t, "agent_id = $1 AND (duration_us IS NULL OR duration_us <= 0 OR parse_status <> 'ok')", r.a.ID()); n != 0 {
		t.Errorf("%d calls without a positive duration or not ok", n)
	}
	var mode, name string
	if err := e.db.QueryRow(context.Background(), "SELECT mode, name FROM agents WHERE id = $1", r.a.ID()).Scan(&mode, &name); err != nil {
		t.Fatal(err)
	}
	if mode != "file" || name != "file-agent" {
		t.Errorf("agents row: mode %q name %q", mode, name)
	}
	// The controller's Prometheus metrics saw the same.
	m := scrape(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{"orbweaver_controller_calls_stored_total 30", `orbweaver_controller_batches_total{result="failed"} 0`, "orbweaver_controller_ingest_queue_depth 0", `orbweaver_controller_errors_total{kind="edge_fold"} 0`} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("controller metrics lack %q", want)
		}
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTruncatedFileStoresCallsBeforeTheCut(t *testing.T) {
	e := startController(t, pgtest.URL(t), "")
	pcap := repoFile(t, "testdata/pcaps/truncated.pcap")
	// What the decoder finds before the cut, offline.
	var lines strings.Builder
	sum, offErr := agent.RunOffline(context.Background(), agent.OfflineConfig{File: pcap}, &lines)
	if offErr == nil || !strings.Contains(offErr.Error(), "truncated") {
		t.Fatalf("offline run error = %v, want a truncation error", offErr)
	}
	if sum.Calls == 0 || sum.Calls >= 30 {
		t.Fatalf("offline run found %d calls before the cut; want some but not all 30", sum.Calls)
	}
	r := startAgent(t, agent.Config{Controller: e.addr, Name: "truncated", File: pcap, ExitWhenDone: true})
	var err error
	select {
	case err = <-r.done:
		r.cancel = nil
	case <-time.After(60 * time.Second):
		t.Fatal("file agent did not finish")
	}
	if err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("agent error = %v, want the truncation reported", err)
	}
	if n := e.count(t, "agent_id = $1", r.a.ID()); n != int(sum.Calls) {
		t.Fatalf("stored %d calls, want the %d decoded before the cut", n, sum.Calls)
	}
}

func TestLiveCaptureOnLoopback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("live capture needs root")
	}
	e := startController(t, pgtest.URL(t), "")
	srv, port := startHTTPServer(t)
	_ = srv
	agentMetrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startAgent(t, agent.Config{Controller: e.addr, Name: "live", Interface: "lo", Filter: fmt.Sprintf("tcp port %d", port), MetricsListen: agentMetrics})
	waitCapturing(t, e, r.a.ID())

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer client.CloseIdleConnections()
	want := map[int]int{}
	for i := range 200 {
		code := []int{200, 201, 404, 500}[i%4]
		want[code]++
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/status/%d?i=%d", port, code, i))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != code {
			t.Fatalf("server answered %d, want %d", resp.StatusCode, code)
		}
	}
	waitFor(t, 15*time.Second, "200 calls stored", func() bool {
		n := e.count(t, "agent_id = $1", r.a.ID())
		if n < 200 {
			t.Logf("%d calls stored; agent stats %+v", n, r.a.Stats())
		}
		return n >= 200
	})
	time.Sleep(300 * time.Millisecond) // nothing more may arrive
	if n := e.count(t, "agent_id = $1", r.a.ID()); n != 200 {
		t.Fatalf("stored %d calls, want exactly 200", n)
	}
	rows, err := e.db.Query(context.Background(), `SELECT status, count(*) FROM http_calls
		WHERE agent_id = $1 AND duration_us > 0 AND method = 'GET' AND path LIKE '/status/%' AND parse_status = 'ok'
		AND server_port = $2 AND host(server_ip) = '127.0.0.1' GROUP BY status`, r.a.ID(), port)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]int{}
	for rows.Next() {
		var s, n int
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		got[s] = n
	}
	rows.Close()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("calls by status with duration > 0 = %v, want %v", got, want)
	}
	if n := e.count(t, "agent_id = $1 AND path LIKE '/status/' || status || '%'", r.a.ID()); n != 200 {
		t.Fatalf("%d calls have a status matching their path, want 200", n)
	}
	m := scrape(t, "http://"+agentMetrics+"/metrics")
	for _, want := range []string{"orbweaver_agent_calls_acked_total 200", "orbweaver_agent_calls_captured_total 200", "orbweaver_agent_capturing 1", "orbweaver_agent_connected 1"} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("agent metrics lack %q", want)
		}
	}
}

// startHTTPServer serves /status/{code} on a free 127.0.0.1 port.
func startHTTPServer(t *testing.T) (*http.Server, int) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status/{code}", func(w http.ResponseWriter, r *http.Request) {
		var code int
		fmt.Sscan(r.PathValue("code"), &code)
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		fmt.Fprintf(w, "status %d\n", code)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return srv, lis.Addr().(*net.TCPAddr).Port
}

func controlConn(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// agentState reads an agent's state through the control API by reflection.
func agentState(t *testing.T, rc *reflectClient, id string) string {
	t.Helper()
	out, err := rc.call(context.Background(), "orbweaver.v1.ControlService/GetAgent", fmt.Sprintf(`{"agent":%q}`, id))
	if status.Code(err) == codes.NotFound {
		return "" // not registered yet
	}
	if err != nil {
		t.Fatalf("GetAgent: %v", err)
	}
	var a struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatal(err)
	}
	return a.State
}

func waitCapturing(t *testing.T, e *env, id string) {
	t.Helper()
	rc, _, err := newReflectClient(context.Background(), controlConn(t, e.addr))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "agent capturing", func() bool { return agentState(t, rc, id) == "AGENT_STATE_CAPTURING" })
}

func get(t *testing.T, url string) {
	t.Helper()
	// A fresh connection per request: each is captured from its SYN.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func TestControlThroughReflection(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("live capture needs root")
	}
	e := startController(t, pgtest.URL(t), "")
	_, port := startHTTPServer(t)
	r := startAgent(t, agent.Config{Controller: e.addr, Name: "ctl", Interface: "lo", Filter: fmt.Sprintf("tcp port %d", port)})
	ctx := context.Background()
	rc, services, err := newReflectClient(ctx, controlConn(t, e.addr))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"orbweaver.v1.AgentService", "orbweaver.v1.ControlService", "grpc.reflection.v1.ServerReflection"} {
		if !strings.Contains(strings.Join(services, " "), want) {
			t.Fatalf("reflection lists %v, missing %s", services, want)
		}
	}
	waitFor(t, 20*time.Second, "agent capturing", func() bool { return agentState(t, rc, r.a.ID()) == "AGENT_STATE_CAPTURING" })

	out, err := rc.call(ctx, "orbweaver.v1.ControlService/ListAgents", `{}`)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Agents []struct{ ID, Name, State, Mode string } `json:"agents"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Agents) != 1 || list.Agents[0].ID != r.a.ID() || list.Agents[0].Name != "ctl" ||
		list.Agents[0].State != "AGENT_STATE_CAPTURING" || list.Agents[0].Mode != "AGENT_MODE_INTERFACE" {
		t.Fatalf("ListAgents = %s", out)
	}

	url := fmt.Sprintf("http://127.0.0.1:%d/status/200", port)
	for range 5 {
		get(t, url)
	}
	waitFor(t, 10*time.Second, "5 calls", func() bool { return e.count(t, "agent_id = $1", r.a.ID()) == 5 })

	if _, err := rc.call(ctx, "orbweaver.v1.ControlService/StopCapture", `{"agent":"ctl"}`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "agent stopped", func() bool { return agentState(t, rc, r.a.ID()) == "AGENT_STATE_STOPPED" })
	for range 7 {
		get(t, url)
	}
	time.Sleep(time.Second) // a batch would have been sent within 200 ms
	if n := e.count(t, "agent_id = $1", r.a.ID()); n != 5 {
		t.Fatalf("after StopCapture: %d calls stored, want still 5", n)
	}

	if _, err := rc.call(ctx, "orbweaver.v1.ControlService/StartCapture", fmt.Sprintf(`{"agent":%q}`, r.a.ID())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "agent capturing again", func() bool { return agentState(t, rc, r.a.ID()) == "AGENT_STATE_CAPTURING" })
	for range 3 {
		get(t, url)
	}
	waitFor(t, 10*time.Second, "8 calls", func() bool { return e.count(t, "agent_id = $1", r.a.ID()) == 8 })
	time.Sleep(300 * time.Millisecond)
	if n := e.count(t, "agent_id = $1", r.a.ID()); n != 8 {
		t.Fatalf("after StartCapture: %d calls stored, want 8", n)
	}
}

func TestInvalidConfigUpdateChangesNothing(t *testing.T) {
	e := startController(t, pgtest.URL(t), "")
	pcap := repoFile(t, "testdata/pcaps/http_keepalive.pcap")
	r := startAgent(t, agent.Config{Controller: e.addr, Name: "cfg", File: pcap})
	ctx := context.Background()
	rc, _, err := newReflectClient(ctx, controlConn(t, e.addr))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "initial config acknowledged", func() bool {
		out, err := rc.call(ctx, "orbweaver.v1.ControlService/GetConfig", `{"agent":"cfg"}`)
		return err == nil && strings.Contains(out, `"ackedVersion":"1"`)
	})
	before, err := rc.call(ctx, "orbweaver.v1.ControlService/GetConfig", `{"agent":"cfg"}`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = rc.call(ctx, "orbweaver.v1.ControlService/UpdateConfig",
		`{"agent":"cfg","config":{"capture":{"bpf_filter":"tcp and nonsense here","snaplen":10}},"update_mask":"capture.bpfFilter,capture.snaplen"}`)
	st, _ := status.FromError(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("UpdateConfig error = %v, want InvalidArgument", err)
	}
	for _, want := range []string{"capture.bpf_filter: does not compile", "capture.snaplen: 10 is out of range [64, 262144]"} {
		if !strings.Contains(st.Message(), want) {
			t.Errorf("error %q does not mention %q", st.Message(), want)
		}
	}
	after, err := rc.call(ctx, "orbweaver.v1.ControlService/GetConfig", `{"agent":"cfg"}`)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("config changed by a rejected update:\nbefore %s\nafter  %s", before, after)
	}

	// A valid one is stored, versioned, pushed and acknowledged.
	out, err := rc.call(ctx, "orbweaver.v1.ControlService/UpdateConfig",
		`{"agent":"cfg","config":{"capture":{"bpf_filter":"tcp port 8080"}},"update_mask":"capture.bpfFilter"}`)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"version":"2"`) || !strings.Contains(out, `"bpfFilter":"tcp port 8080"`) {
		t.Fatalf("UpdateConfig = %s", out)
	}
	waitFor(t, 10*time.Second, "config version 2 acknowledged", func() bool {
		out, err := rc.call(ctx, "orbweaver.v1.ControlService/GetConfig", `{"agent":"cfg"}`)
		return err == nil && strings.Contains(out, `"ackedVersion":"2"`)
	})
	_ = r
}

// TestControllerCrashResend kills the controller (no graceful stop) in the
// middle of a file's upload and starts a new one on the same address and
// database: the agent reconnects, resends what was not acknowledged, and
// every exchange is stored exactly once.
func TestControllerCrashResend(t *testing.T) {
	dbURL := pgtest.URL(t)
	dir := t.TempDir()
	pcap, sum := volumePcap(t, pcapgen.VolumeSpec{Connections: 400, ExchangesPerConn: 50, Seed: 7})

	bin := buildController(t)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	tokensFile := filepath.Join(dir, "tokens.json")
	tokens, _, err := auth.EnsureTokens(tokensFile)
	if err != nil {
		t.Fatal(err)
	}
	proc := startControllerProcess(t, bin, addr, dbURL, tokensFile)

	r := startAgent(t, agent.Config{Controller: addr, Name: "resend", File: pcap, ExitWhenDone: true,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(auth.BearerToken(tokens.EnrollmentToken(), false))}})
	db, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	count := func() int {
		var n int
		if err := db.QueryRow(context.Background(), "SELECT count(*) FROM http_calls").Scan(&n); err != nil {
			return -1
		}
		return n
	}
	// Kill once some but not all calls are stored.
	waitFor(t, 60*time.Second, "first calls stored", func() bool { return count() > 0 })
	if err := proc.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = proc.Wait()
	mid := count()
	t.Logf("controller killed with %d of %d calls stored", mid, sum.Exchanges)
	time.Sleep(500 * time.Millisecond)
	startControllerProcess(t, bin, addr, dbURL, tokensFile)

	select {
	case err := <-r.done:
		r.cancel = nil
		if err != nil {
			t.Fatalf("agent: %v", err)
		}
	case <-time.After(120 * time.Second):
		t.Fatal("agent did not finish")
	}
	st := r.a.Stats()
	if n := count(); n != sum.Exchanges {
		t.Fatalf("stored %d calls, want exactly %d (uplink stats %+v)", n, sum.Exchanges, st.Uplink)
	}
	var dupCalls int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM (SELECT client_ip, client_port, request_start FROM http_calls
		GROUP BY 1, 2, 3 HAVING count(*) > 1) d`).Scan(&dupCalls); err != nil {
		t.Fatal(err)
	}
	if dupCalls != 0 {
		t.Fatalf("%d calls stored twice", dupCalls)
	}
	if st.Uplink.Reconnects < 1 {
		t.Fatalf("agent did not reconnect: %+v", st.Uplink)
	}
	t.Logf("uplink: %+v", st.Uplink)
}

var buildOnce sync.Once
var builtController string
var buildErr error

func buildController(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "orbweaver-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtController = filepath.Join(dir, "orbweaver-controller")
		buildErr = runCmd(repoFile(t, "."), "go", "build", "-o", builtController, "./controller/cmd/orbweaver-controller")
	})
	if buildErr != nil {
		t.Fatalf("build controller: %v", buildErr)
	}
	return builtController
}

func withTokens(t *auth.Tokens) func(*controller.Config) {
	return func(c *controller.Config) { c.Tokens = t }
}

func mustPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// volumePcap writes a generated capture into a temporary directory.
func volumePcap(t *testing.T, spec pcapgen.VolumeSpec) (string, pcapgen.Summary) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "volume.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum, err := pcapgen.GenerateHTTP(f, spec)
	if err != nil {
		t.Fatal(err)
	}
	return path, sum
}
