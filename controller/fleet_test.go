package controller_test

// Fleet management acceptance tests (issue 4): config provenance, invalid
// updates, default propagation, status transitions, exactly-once across a
// Postgres restart, exact drop counters, and auth refusals.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/orbweaver/orbweaver/agent"
	"github.com/orbweaver/orbweaver/internal/auth"
	"github.com/orbweaver/orbweaver/internal/pcapgen"
	"github.com/orbweaver/orbweaver/internal/pgtest"
)

type configView struct {
	Version      string `json:"version"`
	AckedVersion string `json:"ackedVersion"`
	ApplyError   string `json:"applyError"`
	Config       struct {
		Capture struct {
			BpfFilter string `json:"bpfFilter"`
		} `json:"capture"`
		Shipping struct {
			BatchMaxCalls int `json:"batchMaxCalls"`
		} `json:"shipping"`
	} `json:"config"`
	Fields   []struct{ Path, Value, Source string } `json:"fields"`
	Reported struct {
		Capture struct {
			Mode, FilePath, BpfFilter string
		} `json:"capture"`
	} `json:"reported"`
}

func (c configView) field(path string) string {
	for _, f := range c.Fields {
		if f.Path == path {
			return f.Source + " " + f.Value
		}
	}
	return "missing"
}

func getConfig(t *testing.T, rc *reflectClient, agent string) configView {
	t.Helper()
	out, err := rc.call(context.Background(), "orbweaver.v1.ControlService/GetConfig", fmt.Sprintf(`{"agent":%q}`, agent))
	if err != nil {
		t.Fatalf("GetConfig %s: %v", agent, err)
	}
	var v configView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func mustCall(t *testing.T, rc *reflectClient, method, req string) string {
	t.Helper()
	out, err := rc.call(context.Background(), method, req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, req, err)
	}
	return out
}

func TestConfigDefaultsOverridesAndProvenance(t *testing.T) {
	e := startController(t, pgtest.URL(t), "")
	pcap := repoFile(t, "testdata/pcaps/http_keepalive.pcap")
	names := []string{"a1", "a2", "a3"}
	for _, n := range names {
		startAgent(t, agent.Config{Controller: e.addr, Name: n, File: pcap})
	}
	rc, _, err := newReflectClient(context.Background(), controlConn(t, e.addr))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		waitFor(t, 20*time.Second, n+" acknowledged its first config", func() bool {
			out, err := rc.call(context.Background(), "orbweaver.v1.ControlService/GetConfig", fmt.Sprintf(`{"agent":%q}`, n))
			return err == nil && strings.Contains(out, `"ackedVersion":"1"`)
		})
	}
	// a3 overrides the batch size; a1 overrides the filter.
	mustCall(t, rc, "orbweaver.v1.ControlService/UpdateConfig",
		`{"agent":"a3","config":{"shipping":{"batch_max_calls":7}},"update_mask":"shipping.batchMaxCalls"}`)
	mustCall(t, rc, "orbweaver.v1.ControlService/UpdateConfig",
		`{"agent":"a1","config":{"capture":{"bpf_filter":"tcp port 8080"}},"update_mask":"capture.bpfFilter"}`)

	// A server-wide default reaches every agent that does not override it.
	mustCall(t, rc, "orbweaver.v1.ControlService/UpdateDefaultConfig",
		`{"config":{"shipping":{"batch_max_calls":250},"capture":{"bpf_filter":"tcp"}},"update_mask":"shipping.batchMaxCalls,capture.bpfFilter"}`)
	want := map[string]struct {
		version, batch, filter string
	}{
		"a1": {"3", "default 250", `override "tcp port 8080"`},
		"a2": {"2", "default 250", `default "tcp"`},
		"a3": {"3", "override 7", `default "tcp"`},
	}
	for _, n := range names {
		w := want[n]
		waitFor(t, 10*time.Second, n+" acknowledged version "+w.version, func() bool { return getConfig(t, rc, n).AckedVersion == w.version })
		v := getConfig(t, rc, n)
		if v.Version != w.version || v.field("shipping.batch_max_calls") != w.batch || v.field("capture.bpf_filter") != w.filter ||
			v.field("capture.snaplen") != "builtin 262144" || v.ApplyError != "" {
			t.Errorf("%s: version %s, batch %q, filter %q, snaplen %q, apply error %q; want %+v",
				n, v.Version, v.field("shipping.batch_max_calls"), v.field("capture.bpf_filter"), v.field("capture.snaplen"), v.ApplyError, w)
		}
	}
	// The agent reports what it runs with: its mode and file come from its flags.
	if rep := getConfig(t, rc, "a2").Reported.Capture; rep.Mode != "file" || rep.FilePath != pcap || rep.BpfFilter != "tcp" {
		t.Errorf("a2 reported capture config %+v", rep)
	}
	if got := getConfig(t, rc, "a3").Config.Shipping.BatchMaxCalls; got != 7 {
		t.Errorf("a3 effective batch_max_calls = %d, want its override 7", got)
	}

	// Clearing the override falls back to the default.
	mustCall(t, rc, "orbweaver.v1.ControlService/UpdateConfig", `{"agent":"a3","clear_mask":"shipping.batchMaxCalls"}`)
	waitFor(t, 10*time.Second, "a3 acknowledged version 4", func() bool { return getConfig(t, rc, "a3").AckedVersion == "4" })
	if v := getConfig(t, rc, "a3"); v.field("shipping.batch_max_calls") != "default 250" || v.Config.Shipping.BatchMaxCalls != 250 {
		t.Errorf("after clearing: %q, effective %d", v.field("shipping.batch_max_calls"), v.Config.Shipping.BatchMaxCalls)
	}
	// A default that changes nothing for an agent does not bump its version.
	mustCall(t, rc, "orbweaver.v1.ControlService/UpdateDefaultConfig",
		`{"config":{"capture":{"bpf_filter":"tcp"}},"update_mask":"capture.bpfFilter"}`)
	if v := getConfig(t, rc, "a2"); v.Version != "2" {
		t.Errorf("a2 version after a no-op default update = %s, want 2", v.Version)
	}

	// Config survives a controller restart.
	e.stop()
	e2 := startController(t, e.dbURL, "")
	rc2, _, err := newReflectClient(context.Background(), controlConn(t, e2.addr))
	if err != nil {
		t.Fatal(err)
	}
	if v := getConfig(t, rc2, "a1"); v.field("capture.bpf_filter") != `override "tcp port 8080"` || v.field("shipping.batch_max_calls") != "default 250" {
		t.Errorf("after restart a1: filter %q batch %q", v.field("capture.bpf_filter"), v.field("shipping.batch_max_calls"))
	}
}

func TestInvalidUpdatesReturnEveryErrorAndApplyNothing(t *testing.T) {
	e := startController(t, pgtest.URL(t), "")
	startAgent(t, agent.Config{Controller: e.addr, Name: "bad", File: repoFile(t, "testdata/pcaps/http_keepalive.pcap")})
	rc, _, err := newReflectClient(context.Background(), controlConn(t, e.addr))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "first config acknowledged", func() bool {
		out, err := rc.call(context.Background(), "orbweaver.v1.ControlService/GetConfig", `{"agent":"bad"}`)
		return err == nil && strings.Contains(out, `"ackedVersion":"1"`)
	})
	before := getConfig(t, rc, "bad")
	_, err = rc.call(context.Background(), "orbweaver.v1.ControlService/UpdateConfig", `{"agent":"bad",
		"config":{"capture":{"bpf_filter":"port eighty","interface":"eth99","snaplen":1,"mode":"tape"},
			"shipping":{"max_in_flight_batches":0,"queue_max_bytes":"10"},"heartbeat_interval_seconds":99999,
			"parsing":{"protocols":["http","smtp"],"template_rules":[{"pattern":"(","template":"/x"}]}},
		"update_mask":"capture,shipping.maxInFlightBatches,shipping.queueMaxBytes,heartbeatIntervalSeconds,parsing.protocols,parsing.templateRules"}`)
	st, _ := status.FromError(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("err = %v, want InvalidArgument", err)
	}
	for _, want := range []string{
		"capture.snaplen: 1 is out of range [64, 262144]",
		"capture.buffer_size_mib: 0 is out of range [1, 4096]", // "capture" sets every capture field
		"shipping.max_in_flight_batches: 0 is out of range [1, 1024]",
		"shipping.queue_max_bytes: 10 is out of range [1048576, 4294967296]",
		"heartbeat_interval_seconds: 99999 is out of range [1, 3600]",
		`capture.mode: "tape" is not a mode`,
		`capture.interface: the agent has no interface "eth99"`,
		"capture.bpf_filter: does not compile",
		`parsing.protocols[1]: unknown protocol "smtp"`,
		"parsing.template_rules[0].pattern: does not compile",
	} {
		if !strings.Contains(st.Message(), want) {
			t.Errorf("error does not mention %q:\n%s", want, st.Message())
		}
	}
	if n := len(st.Details()); n != 1 {
		t.Errorf("status has %d details, want one BadRequest", n)
	}
	after := getConfig(t, rc, "bad")
	if after.Version != before.Version || fmt.Sprint(after.Fields) != fmt.Sprint(before.Fields) {
		t.Fatalf("a rejected update changed the config: version %s -> %s", before.Version, after.Version)
	}
	// Defaults are validated too.
	_, err = rc.call(context.Background(), "orbweaver.v1.ControlService/UpdateDefaultConfig",
		`{"config":{"shipping":{"batch_max_calls":0}},"update_mask":"shipping.batchMaxCalls"}`)
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "shipping.batch_max_calls: 0 is out of range") {
		t.Fatalf("bad default: %v", err)
	}
}

// buildBinary builds one of the module's commands once per test run.
var builtBins sync.Map

func buildBinary(t *testing.T, pkg string) string {
	t.Helper()
	if p, ok := builtBins.Load(pkg); ok {
		return p.(string)
	}
	dir, err := os.MkdirTemp("", "orbweaver-bin")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	if err := runCmd(repoFile(t, "."), "go", "build", "-o", out, "./"+pkg); err != nil {
		t.Fatalf("build %s: %v", pkg, err)
	}
	builtBins.Store(pkg, out)
	return out
}

func TestAgentStatusTransitions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("live capture needs root")
	}
	e := startController(t, pgtest.URL(t), "")
	_, port := startHTTPServer(t)
	bin := buildBinary(t, "agent/cmd/orbweaver-agent")
	stateDir := t.TempDir()
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "--controller", e.addr, "--name", "st", "--interface", "lo",
			"--filter", fmt.Sprintf("tcp port %d", port), "--state-dir", stateDir, "--log-level", "warn")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	cmd := start()
	rc, _, err := newReflectClient(context.Background(), controlConn(t, e.addr))
	if err != nil {
		t.Fatal(err)
	}
	state := func() string { return agentState(t, rc, "st") }
	expect := func(want string) {
		t.Helper()
		waitFor(t, 20*time.Second, "state "+want, func() bool { return state() == want })
	}
	expect("AGENT_STATE_CAPTURING")
	mustCall(t, rc, "orbweaver.v1.ControlService/StopCapture", `{"agent":"st"}`)
	expect("AGENT_STATE_STOPPED")
	mustCall(t, rc, "orbweaver.v1.ControlService/StartCapture", `{"agent":"st"}`)
	expect("AGENT_STATE_CAPTURING")

	// A config the agent cannot apply (a file that does not exist on its
	// host) shows as wrong configuration, with the reason.
	mustCall(t, rc, "orbweaver.v1.ControlService/UpdateConfig",
		`{"agent":"st","config":{"capture":{"mode":"file","file_path":"/nonexistent/x.pcap"}},"update_mask":"capture.mode,capture.filePath"}`)
	expect("AGENT_STATE_WRONG_CONFIGURATION")
	out := mustCall(t, rc, "orbweaver.v1.ControlService/GetAgent", `{"agent":"st"}`)
	if !strings.Contains(out, "/nonexistent/x.pcap") {
		t.Errorf("wrong configuration without the reason: %s", out)
	}
	mustCall(t, rc, "orbweaver.v1.ControlService/UpdateConfig", `{"agent":"st","clear_mask":"capture.mode,capture.filePath"}`)
	expect("AGENT_STATE_CAPTURING")

	// kill -9: the stream dies with the process.
	bootOf := func() (boot string, prev map[string]any) {
		var a struct {
			BootID       string         `json:"bootId"`
			PreviousBoot map[string]any `json:"previousBoot"`
		}
		if err := json.Unmarshal([]byte(mustCall(t, rc, "orbweaver.v1.ControlService/GetAgent", `{"agent":"st"}`)), &a); err != nil {
			t.Fatal(err)
		}
		return a.BootID, a.PreviousBoot
	}
	firstBoot, _ := bootOf()
	time.Sleep(1200 * time.Millisecond) // the boot record is written every second
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	expect("AGENT_STATE_NOT_VISIBLE")

	// Restarted with the same state dir: same identity, capture requested.
	before := mustCall(t, rc, "orbweaver.v1.ControlService/ListAgents", `{}`)
	cmd = start()
	expect("AGENT_STATE_CAPTURING")
	after := mustCall(t, rc, "orbweaver.v1.ControlService/ListAgents", `{}`)
	if strings.Count(after, `"name":"st"`) != 1 || strings.Count(before, `"name":"st"`) != 1 {
		t.Fatalf("restart created a second agent:\n%s", after)
	}
	// The new process reports how the killed one ended.
	secondBoot, prev := bootOf()
	if secondBoot == firstBoot || prev["bootId"] != firstBoot || prev["cleanExit"] == true || prev["asOfNs"] == nil {
		t.Fatalf("after kill -9: boot %s, previous boot %v; want the first boot %s, not clean", secondBoot, prev, firstBoot)
	}
	// A clean stop (SIGTERM) is reported as such.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("agent exit after SIGTERM: %v", err)
	}
	expect("AGENT_STATE_NOT_VISIBLE")
	start()
	expect("AGENT_STATE_CAPTURING")
	if _, prev := bootOf(); prev["bootId"] != secondBoot || prev["cleanExit"] != true {
		t.Fatalf("after SIGTERM: previous boot %v; want %s with a clean exit", prev, secondBoot)
	}
}

// TestPostgresRestartExactlyOnce restarts the database in the middle of an
// upload from a file agent: batches that fail are acknowledged with an
// error, the agent resends them, and every call is stored once.
func TestPostgresRestartExactlyOnce(t *testing.T) {
	dbURL := pgtest.URL(t)
	e := startController(t, dbURL, "")
	pcap, sum := volumePcap(t, pcapgen.VolumeSpec{Connections: 400, ExchangesPerConn: 50, Seed: 11})
	r := startAgent(t, agent.Config{Controller: e.addr, Name: "pg", File: pcap, ExitWhenDone: true})
	waitFor(t, 60*time.Second, "first calls stored", func() bool { return e.count(t, "") > 0 })
	if err := pgtest.Cluster(t).Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		r.cancel = nil
		if err != nil {
			t.Fatalf("agent: %v", err)
		}
	case <-time.After(120 * time.Second):
		t.Fatal("agent did not finish")
	}
	// A new pool: the test's own connections died with the restart.
	fresh := &env{t: t, db: mustPool(t, dbURL)}
	if n := fresh.count(t, ""); n != sum.Exchanges {
		t.Fatalf("stored %d calls, want exactly %d; uplink %+v", n, sum.Exchanges, r.a.Stats().Uplink)
	}
	up := r.a.Stats().Uplink
	if up.BatchesResent == 0 {
		t.Errorf("no batch was resent: the restart did not hit the upload (%+v)", up)
	}
	t.Logf("uplink after the Postgres restart: %+v", up)
}

// TestQueueOverflowDropsAreExact captures live while the controller is
// down: the agent keeps what fits in its queue, drops and counts the rest,
// and delivers what it kept once the controller is back.
func TestQueueOverflowDropsAreExact(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("live capture needs root")
	}
	dbURL := pgtest.URL(t)
	_, port := startHTTPServer(t)
	dir := t.TempDir()
	tokensFile := filepath.Join(dir, "tokens.json")
	tokens, _, err := auth.EnsureTokens(tokensFile)
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := tokens.OperatorToken("admin")
	bin := buildBinary(t, "controller/cmd/orbweaver-controller")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	proc := startControllerProcess(t, bin, addr, dbURL, tokensFile)
	adminConn := controlConn(t, addr, grpc.WithPerRPCCredentials(auth.BearerToken(admin, false)))
	rc, _, err := newReflectClient(context.Background(), adminConn)
	if err != nil {
		t.Fatal(err)
	}
	// The queue is tiny before the agent even connects.
	mustCall(t, rc, "orbweaver.v1.ControlService/UpdateDefaultConfig",
		`{"config":{"shipping":{"queue_max_calls":40,"batch_max_calls":10,"batch_max_delay_ms":10}},"update_mask":"shipping.queueMaxCalls,shipping.batchMaxCalls,shipping.batchMaxDelayMs"}`)
	r := startAgent(t, agent.Config{Controller: addr, Name: "q", Interface: "lo", Filter: fmt.Sprintf("tcp port %d", port),
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(auth.BearerToken(tokens.EnrollmentToken(), false))}})
	waitFor(t, 20*time.Second, "capturing", func() bool { return r.a.Stats().Capturing && r.a.Stats().Uplink.Connected })

	// Controller down: 100 calls for a queue of 40.
	_ = proc.Process.Kill()
	_ = proc.Wait()
	waitFor(t, 10*time.Second, "agent disconnected", func() bool { return !r.a.Stats().Uplink.Connected })
	url := fmt.Sprintf("http://127.0.0.1:%d/status/200", port)
	for range 100 {
		get(t, url)
	}
	// Every request is decoded unless the kernel dropped its packets (a
	// loaded CI machine may): then the loss is counted as kernel drops,
	// and the queue accounting below is still exact for what was decoded.
	deadline := time.Now().Add(20 * time.Second)
	for r.a.Stats().Pipeline.Calls < 100 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	all := r.a.Stats()
	decoded := all.Pipeline.Calls
	if decoded < 100 && all.KernelDrops == 0 {
		t.Fatalf("decoded %d calls of 100 requests without any kernel drop; agent stats %+v", decoded, all)
	}
	if decoded <= 40 {
		t.Fatalf("decoded only %d calls (kernel drops %d): too few to fill the queue", decoded, all.KernelDrops)
	}
	st := all.Uplink
	if st.QueueDrops != decoded-40 || st.QueueDropsByReason["queue_full_calls"] != decoded-40 || st.QueueDepth != 40 {
		t.Fatalf("while the controller is down: %+v; want %d drops (queue_full_calls) and 40 queued", st, decoded-40)
	}
	startControllerProcess(t, bin, addr, dbURL, tokensFile)
	e := &env{t: t, db: mustPool(t, dbURL)}
	waitFor(t, 30*time.Second, "40 kept calls stored", func() bool { return e.count(t, "") == 40 })
	time.Sleep(300 * time.Millisecond)
	if n := e.count(t, ""); n != 40 {
		t.Fatalf("stored %d, want 40", n)
	}
	// The drop count reaches the controller in heartbeats.
	waitFor(t, 20*time.Second, "heartbeat with the drops", func() bool {
		var drops int64
		err := e.db.QueryRow(context.Background(), "SELECT coalesce(max(queue_drops), 0) FROM agent_heartbeats").Scan(&drops)
		return err == nil && drops == int64(decoded-40)
	})
}

func TestAuthRefusals(t *testing.T) {
	dir := t.TempDir()
	tokens, _, err := auth.EnsureTokens(filepath.Join(dir, "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	e := startController(t, pgtest.URL(t), "", withTokens(tokens))
	viewer, _ := tokens.OperatorToken("viewer")
	admin, _ := tokens.OperatorToken("admin")
	pcap := repoFile(t, "testdata/pcaps/http_keepalive.pcap")

	// An agent with a wrong token never registers; with the enrollment token it does.
	bad := startAgent(t, agent.Config{Controller: e.addr, Name: "intruder", File: pcap,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(auth.BearerToken("not-a-token", false))}})
	good := startAgent(t, agent.Config{Controller: e.addr, Name: "ok", File: pcap,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(auth.BearerToken(tokens.EnrollmentToken(), false))}})

	viewerRC, _, err := newReflectClient(context.Background(), controlConn(t, e.addr, grpc.WithPerRPCCredentials(auth.BearerToken(viewer, false))))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "good agent registered", func() bool { return agentState(t, viewerRC, good.a.ID()) != "" })
	if got := bad.a.Stats().Uplink; got.Connected || got.ConnectAttempts < 1 {
		t.Fatalf("agent with a wrong token: %+v", got)
	}
	out := mustCall(t, viewerRC, "orbweaver.v1.ControlService/ListAgents", `{}`)
	if strings.Contains(out, "intruder") {
		t.Fatalf("an unauthenticated agent was registered: %s", out)
	}
	tests := []struct {
		name, token, method, req string
		code                     codes.Code
		msg                      string
	}{
		{"no token", "", "ListAgents", `{}`, codes.Unauthenticated, "missing bearer token"},
		{"bad token", "x", "ListAgents", `{}`, codes.Unauthenticated, "invalid token"},
		{"agent token on control", tokens.EnrollmentToken(), "ListAgents", `{}`, codes.PermissionDenied, "needs an operator token"},
		{"viewer may not stop", viewer, "StopCapture", `{"agent":"ok"}`, codes.PermissionDenied, "role viewer may not call orbweaver.v1.ControlService/StopCapture; it needs admin"},
		{"viewer may not configure", viewer, "UpdateDefaultConfig", `{}`, codes.PermissionDenied, "it needs admin"},
		{"viewer reads", viewer, "GetConfig", `{"agent":"ok"}`, codes.OK, ""},
		{"admin stops", admin, "StopCapture", `{"agent":"ok"}`, codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []grpc.DialOption
			if tt.token != "" {
				opts = append(opts, grpc.WithPerRPCCredentials(auth.BearerToken(tt.token, false)))
			}
			rc, _, err := newReflectClient(context.Background(), controlConn(t, e.addr, opts...))
			if err != nil {
				t.Fatal(err) // reflection is open to anyone
			}
			_, err = rc.call(context.Background(), "orbweaver.v1.ControlService/"+tt.method, tt.req)
			st, _ := status.FromError(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("%s: %v; want %v containing %q", tt.method, err, tt.code, tt.msg)
			}
		})
	}
}

func TestUploadWithTheAgentCLI(t *testing.T) {
	tokens, _, err := auth.EnsureTokens(filepath.Join(t.TempDir(), "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := tokens.OperatorToken("admin")
	viewer, _ := tokens.OperatorToken("viewer")
	e := startController(t, pgtest.URL(t), "", withTokens(tokens))
	bin := buildBinary(t, "agent/cmd/orbweaver-agent")
	pcap := repoFile(t, "testdata/pcaps/http_keepalive.pcap")

	out, err := exec.Command(bin, "--controller", e.addr, "--upload", pcap, "--name", "incident-42", "--token", viewer).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "PermissionDenied") {
		t.Fatalf("upload with a viewer token: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--controller", e.addr, "--upload", pcap, "--name", "incident-42", "--token", admin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("upload: %v\n%s", err, stderr.String())
	}
	var resp struct {
		AgentID string `json:"agentId"`
		Calls   string `json:"calls"`
		Packets string `json:"packets"`
		Bytes   string `json:"bytes"`
	}
	if err := json.Unmarshal(stdout, &resp); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if resp.Calls != "30" || resp.Packets != "162" || resp.Bytes != "59944" {
		t.Fatalf("upload response %s", stdout)
	}
	if !strings.Contains(stderr.String(), "uploaded 59944 of 59944 bytes (100%)") {
		t.Errorf("no progress on stderr: %q", stderr.String())
	}
	if n := e.count(t, "agent_id = $1", resp.AgentID); n != 30 {
		t.Fatalf("stored %d calls under the upload agent, want 30", n)
	}
	rc, _, err := newReflectClient(context.Background(), controlConn(t, e.addr, grpc.WithPerRPCCredentials(auth.BearerToken(viewer, false))))
	if err != nil {
		t.Fatal(err)
	}
	a := mustCall(t, rc, "orbweaver.v1.ControlService/GetAgent", fmt.Sprintf(`{"agent":%q}`, resp.AgentID))
	if !strings.Contains(a, `"name":"incident-42"`) || !strings.Contains(a, `"mode":"AGENT_MODE_UPLOAD"`) || !strings.Contains(a, `"state":"AGENT_STATE_STOPPED"`) {
		t.Fatalf("upload agent: %s", a)
	}
	if u := mustCall(t, rc, "orbweaver.v1.ControlService/ListUploads", `{}`); !strings.Contains(u, `"state":"done"`) || !strings.Contains(u, `"callsStored":"30"`) {
		t.Fatalf("ListUploads: %s", u)
	}
}

// TestParsingConfigReachesTheDecoder changes parsing settings remotely and
// checks their effect on stored calls: template rules, extra redacted
// headers, body capture, and identification.
func TestParsingConfigReachesTheDecoder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("live capture needs root")
	}
	e := startController(t, pgtest.URL(t), "")
	_, port := startHTTPServer(t)
	r := startAgent(t, agent.Config{Controller: e.addr, Name: "parse", Interface: "lo", Filter: fmt.Sprintf("tcp port %d", port)})
	rc, _, err := newReflectClient(context.Background(), controlConn(t, e.addr))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "capturing", func() bool { return agentState(t, rc, r.a.ID()) == "AGENT_STATE_CAPTURING" })
	sessions := r.a.Stats().Sessions
	mustCall(t, rc, "orbweaver.v1.ControlService/UpdateConfig", `{"agent":"parse","config":{"parsing":{
		"headers_redact":["x-api-key"],"headers_keep":["x-api-key","accept"],"capture_bodies":true,"body_max_bytes":100,
		"template_rules":[{"pattern":"^/status/2..$","template":"/status/{success}"}]}},
		"update_mask":"parsing.headersRedact,parsing.headersKeep,parsing.captureBodies,parsing.bodyMaxBytes,parsing.templateRules"}`)
	waitFor(t, 10*time.Second, "config acknowledged", func() bool { return getConfig(t, rc, "parse").AckedVersion == "2" })
	waitFor(t, 10*time.Second, "capture restarted", func() bool { st := r.a.Stats(); return st.Sessions > sessions && st.Capturing })
	// Retry until a request is stored (the first one may race the capture's
	// start on lo).
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var query string
	for i := 0; ; i++ {
		query = fmt.Sprintf("x=%d", i)
		req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/status/201?%s", port, query), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("alice", "s3cret")
		req.Header.Set("X-Api-Key", "key-123")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		deadline := time.Now().Add(2 * time.Second)
		for e.count(t, "agent_id = $1 AND query = $2", r.a.ID(), query) == 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if e.count(t, "agent_id = $1 AND query = $2", r.a.ID(), query) == 1 {
			break
		}
		if i == 10 {
			t.Fatal("no request was stored after the config change")
		}
	}
	var ident, template, reqHeaders, body string
	if err := e.db.QueryRow(context.Background(), `SELECT identification, template, request_headers::text, response_body
		FROM http_calls WHERE agent_id = $1 AND query = $2`, r.a.ID(), query).Scan(&ident, &template, &reqHeaders, &body); err != nil {
		t.Fatal(err)
	}
	if ident != "alice" || template != "/status/{success}" || body != "status 201\n" {
		t.Errorf("identification %q, template %q, body %q", ident, template, body)
	}
	if strings.Contains(reqHeaders, "key-123") || !strings.Contains(reqHeaders, `"x-api-key": "hmac:`) || strings.Contains(reqHeaders, "s3cret") {
		t.Errorf("request headers not redacted as configured: %s", reqHeaders)
	}
}
