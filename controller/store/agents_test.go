package store_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/orbweaver/orbweaver/controller/store"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

const (
	agentA = "aaaaaaaa-0000-4000-8000-000000000001"
	agentB = "bbbbbbbb-0000-4000-8000-000000000002"
	agentC = "cccccccc-0000-4000-8000-000000000003"
	bootA  = "aaaaaaaa-1111-4111-8111-000000000001"
)

// checkAgent compares agents, protobuf fields with proto.Equal.
func checkAgent(t *testing.T, what string, got, want store.Agent) {
	t.Helper()
	if len(got.Interfaces) != len(want.Interfaces) {
		t.Errorf("%s: %d interfaces, want %d", what, len(got.Interfaces), len(want.Interfaces))
	} else {
		for i := range got.Interfaces {
			if !proto.Equal(got.Interfaces[i], want.Interfaces[i]) {
				t.Errorf("%s: interface %d = %v, want %v", what, i, got.Interfaces[i], want.Interfaces[i])
			}
		}
	}
	if !proto.Equal(got.Config, want.Config) || (got.Config == nil) != (want.Config == nil) {
		t.Errorf("%s: config = %v, want %v", what, got.Config, want.Config)
	}
	got.Interfaces, want.Interfaces, got.Config, want.Config = nil, nil, nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func hello(id, name string) *orbweaverv1.Hello {
	return &orbweaverv1.Hello{
		AgentId: id, BootId: bootA, Name: name, Hostname: name + ".example", Version: "0.1.0",
		Mode: orbweaverv1.AgentMode_AGENT_MODE_INTERFACE,
		Interfaces: []*orbweaverv1.NetworkInterface{
			{Name: "lo", Addresses: []string{"127.0.0.1/8", "::1/128"}, Loopback: true, Up: true},
			{Name: "eth0", Addresses: []string{"10.0.0.5/24"}, Description: "uplink", Up: true},
		},
	}
}

func testConfig(filter string) *orbweaverv1.AgentConfig {
	return &orbweaverv1.AgentConfig{
		Capture:                  &orbweaverv1.CaptureConfig{Interface: "eth0", BpfFilter: filter, Snaplen: 65535, BufferSizeMib: 8},
		Shipping:                 &orbweaverv1.ShippingConfig{BatchMaxCalls: 1000, BatchMaxDelayMs: 200, QueueMaxCalls: 100000, MaxInFlightBatches: 4},
		HeartbeatIntervalSeconds: 10,
	}
}

func TestUpsertAgentKeepsControllerState(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	t1 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Hour)

	h := hello(agentA, "web-1")
	got, err := s.UpsertAgent(ctx, h, t1)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Agent{
		ID: agentA, Name: "web-1", Hostname: "web-1.example", Version: "0.1.0", Mode: "interface",
		Interfaces: h.Interfaces, BootID: bootA, FirstSeen: t1, LastSeen: t1, CaptureRequested: true,
	}
	checkAgent(t, "first hello", got, want)

	if err := s.SetCaptureRequested(ctx, agentA, false); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAgentState(ctx, agentA, "wrong configuration", "no such interface eth9", t1.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("tcp port 80")
	if v, err := s.SaveAgentConfig(ctx, agentA, cfg); err != nil || v != 1 {
		t.Fatalf("SaveAgentConfig = %d, %v", v, err)
	}

	// The agent restarts with a new boot id, version and interfaces.
	h2 := &orbweaverv1.Hello{AgentId: agentA, BootId: "aaaaaaaa-1111-4111-8111-000000000002", Name: "web-1b",
		Hostname: "web-1.example", Version: "0.2.0", Mode: orbweaverv1.AgentMode_AGENT_MODE_FILE}
	got, err = s.UpsertAgent(ctx, h2, t2)
	if err != nil {
		t.Fatal(err)
	}
	want = store.Agent{
		ID: agentA, Name: "web-1b", Hostname: "web-1.example", Version: "0.2.0", Mode: "file",
		Interfaces: nil, BootID: "aaaaaaaa-1111-4111-8111-000000000002", FirstSeen: t1, LastSeen: t2,
		CaptureRequested: false, State: "wrong configuration", StateReason: "no such interface eth9",
		Config: cfg, ConfigVersion: 1,
	}
	checkAgent(t, "second hello", got, want)
	if len(got.Interfaces) != 0 || got.Interfaces == nil {
		t.Errorf("interfaces = %#v, want empty non-nil", got.Interfaces)
	}

	// Unspecified mode and boot id are stored as NULL.
	got, err = s.UpsertAgent(ctx, &orbweaverv1.Hello{AgentId: agentB}, t2)
	if err != nil {
		t.Fatal(err)
	}
	checkAgent(t, "bare hello", got, store.Agent{ID: agentB, Interfaces: []*orbweaverv1.NetworkInterface{},
		FirstSeen: t2, LastSeen: t2, CaptureRequested: true})
	equalStrings(t, "raw columns", queryStrings(t, s,
		"SELECT coalesce(mode, 'NULL') || ' ' || coalesce(boot_id::text, 'NULL') || ' ' || interfaces::text FROM agents ORDER BY id"),
		[]string{"file aaaaaaaa-1111-4111-8111-000000000002 []", "NULL NULL []"})

	// SetAgentState with a zero time keeps last_seen.
	if err := s.SetAgentState(ctx, agentB, "stopped", "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetAgent(ctx, agentB); err != nil || got.State != "stopped" || !got.LastSeen.Equal(t2) {
		t.Errorf("after SetAgentState: %+v, %v", got, err)
	}
}

func TestUpsertAgentInterfacesJSON(t *testing.T) {
	s := open(t)
	if _, err := s.UpsertAgent(context.Background(), hello(agentA, "web-1"), time.Now()); err != nil {
		t.Fatal(err)
	}
	equalStrings(t, "interfaces", queryStrings(t, s, "SELECT interfaces::text FROM agents"), []string{
		`[{"up": true, "name": "lo", "loopback": true, "addresses": ["127.0.0.1/8", "::1/128"], "description": ""}, ` +
			`{"up": true, "name": "eth0", "loopback": false, "addresses": ["10.0.0.5/24"], "description": "uplink"}]`,
	})
}

func TestFindAgent(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	now := time.Now()
	for _, h := range []*orbweaverv1.Hello{hello(agentA, "web"), hello(agentB, "web"), hello(agentC, "db")} {
		if _, err := s.UpsertAgent(ctx, h, now); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		query   string
		wantID  string
		wantErr error
		errText string
	}{
		{"by id", agentB, agentB, nil, ""},
		{"by unique name", "db", agentC, nil, ""},
		{"ambiguous name", "web", "", store.ErrAmbiguous, `store: agent name "web" is used by several agents, use an id: ambiguous`},
		{"unknown name", "cache", "", store.ErrNotFound, `store: agent "cache": not found`},
		{"unknown id", "dddddddd-0000-4000-8000-000000000004", "", store.ErrNotFound, `store: agent "dddddddd-0000-4000-8000-000000000004": not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := s.FindAgent(ctx, tt.query)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || err.Error() != tt.errText {
					t.Errorf("err = %v, want %s", err, tt.errText)
				}
				return
			}
			if err != nil || a.ID != tt.wantID {
				t.Errorf("FindAgent = %s, %v; want %s", a.ID, err, tt.wantID)
			}
		})
	}

	list, err := s.ListAgents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range list {
		got = append(got, a.Name+" "+a.ID)
	}
	equalStrings(t, "ListAgents", got, []string{"db " + agentC, "web " + agentA, "web " + agentB})
}

func TestAgentNotFound(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	const missing = "dddddddd-0000-4000-8000-000000000004"
	tests := []struct {
		name string
		do   func() error
	}{
		{"GetAgent", func() error { _, err := s.GetAgent(ctx, missing); return err }},
		{"GetAgent not a uuid", func() error { _, err := s.GetAgent(ctx, "web"); return err }},
		{"SetAgentState", func() error { return s.SetAgentState(ctx, missing, "stopped", "", time.Now()) }},
		{"SetCaptureRequested", func() error { return s.SetCaptureRequested(ctx, missing, true) }},
		{"SaveAgentConfig", func() error { _, err := s.SaveAgentConfig(ctx, missing, testConfig("")); return err }},
		{"AckAgentConfig", func() error { return s.AckAgentConfig(ctx, missing, 1, "", nil) }},
	}
	for _, tt := range tests {
		if err := tt.do(); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: err = %v, want ErrNotFound", tt.name, err)
		}
	}
	if list, err := s.ListAgents(ctx); err != nil || len(list) != 0 {
		t.Errorf("ListAgents = %v, %v", list, err)
	}
}

func TestAgentConfigVersions(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if _, err := s.UpsertAgent(ctx, hello(agentA, "web"), time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.AckAgentConfig(ctx, agentA, 1, "", nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ack without config: %v", err)
	}
	type state struct {
		version, acked uint64
		applyError     string
		filter         string
	}
	steps := []struct {
		name    string
		do      func() error
		errText string
		want    state
	}{
		{"save 1", save(s, "port 80", 1), "", state{1, 0, "", "port 80"}},
		{"save 2", save(s, "port 81", 2), "", state{2, 0, "", "port 81"}},
		{"save 3", save(s, "port 82", 3), "", state{3, 0, "", "port 82"}},
		{"ack 2 with error", func() error { return s.AckAgentConfig(ctx, agentA, 2, "bad filter", nil) }, "", state{3, 2, "bad filter", "port 82"}},
		{"stale ack 1 ignored", func() error { return s.AckAgentConfig(ctx, agentA, 1, "", nil) }, "", state{3, 2, "bad filter", "port 82"}},
		{"ack 3 applied", func() error { return s.AckAgentConfig(ctx, agentA, 3, "", nil) }, "", state{3, 3, "", "port 82"}},
		{"ack of a version never saved", func() error { return s.AckAgentConfig(ctx, agentA, 4, "", nil) },
			"store: ack config: agent " + agentA + ": version 4 was never saved (latest 3)", state{3, 3, "", "port 82"}},
		{"save 4 keeps the ack", save(s, "port 83", 4), "", state{4, 3, "", "port 83"}},
	}
	for _, st := range steps {
		err := st.do()
		if (err == nil) != (st.errText == "") || (err != nil && err.Error() != st.errText) {
			t.Errorf("%s: err = %v, want %q", st.name, err, st.errText)
		}
		a, err := s.GetAgent(ctx, agentA)
		if err != nil {
			t.Fatal(err)
		}
		got := state{a.ConfigVersion, a.AckedConfigVersion, a.ApplyError, a.Config.GetCapture().GetBpfFilter()}
		if got != st.want {
			t.Errorf("%s: state = %+v, want %+v", st.name, got, st.want)
		}
		if !proto.Equal(a.Config, testConfig(st.want.filter)) {
			t.Errorf("%s: config = %v", st.name, a.Config)
		}
	}
	equalStrings(t, "stored json", queryStrings(t, s,
		"SELECT (config->'capture'->>'bpf_filter') || ' ' || (config->'capture'->>'promiscuous') || ' ' || (config->>'heartbeat_interval_seconds') || ' ' || (updated_at IS NOT NULL) FROM agent_configs"),
		[]string{"port 83 false 10 true"})
}

func save(s *store.Store, filter string, wantVersion uint64) func() error {
	return func() error {
		v, err := s.SaveAgentConfig(context.Background(), agentA, testConfig(filter))
		if err == nil && v != wantVersion {
			return errors.New("unexpected version")
		}
		return err
	}
}

func TestInsertHeartbeat(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	at := time.Now().UTC().Truncate(time.Microsecond)
	hb := &orbweaverv1.Heartbeat{
		TimeNs: at.Add(-time.Second).UnixNano(), Capturing: true, Packets: 1000, Bytes: 123456, KernelDrops: 3,
		QueueDrops: 4, ParseErrors: 5, CallsSent: 600, QueueDepth: 7, InFlightBatches: 2, LastAckRttUs: 850,
		CaptureError: "",
	}
	if err := s.InsertHeartbeat(ctx, agentA, hb, at); err != nil {
		t.Fatal(err)
	}
	// A zero time takes the heartbeat's own; counters beyond bigint clamp.
	hb2 := &orbweaverv1.Heartbeat{TimeNs: at.Add(time.Second).UnixNano(), Packets: 1 << 63, CaptureError: "interface eth9 not found"}
	if err := s.InsertHeartbeat(ctx, agentA, hb2, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertHeartbeat(ctx, "x", hb, at); err == nil {
		t.Error("bad agent id accepted")
	}
	equalStrings(t, "rows", queryStrings(t, s, `SELECT tableoid::regclass || ' ' || (time = $1) || ' ' || agent_id || ' ' ||
		concat_ws(',', capturing, packets, bytes, kernel_drops, queue_drops, parse_errors, calls_sent, queue_depth,
		in_flight_batches, last_ack_rtt_us, capture_error) FROM agent_heartbeats ORDER BY time`, at),
		[]string{
			"agent_heartbeats_p" + at.Format("20060102") + " true " + agentA + " t,1000,123456,3,4,5,600,7,2,850,",
			"agent_heartbeats_p" + at.Add(time.Second).Format("20060102") + " false " + agentA +
				" f,9223372036854775807,0,0,0,0,0,0,0,0,interface eth9 not found",
		})
}
