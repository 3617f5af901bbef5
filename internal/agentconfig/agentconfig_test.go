package agentconfig

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

func TestPaths(t *testing.T) {
	want := []string{
		"capture.interface", "capture.bpf_filter", "capture.snaplen", "capture.promiscuous", "capture.buffer_size_mib",
		"capture.mode", "capture.file_path",
		"shipping.batch_max_calls", "shipping.batch_max_delay_ms", "shipping.queue_max_calls", "shipping.max_in_flight_batches", "shipping.queue_max_bytes",
		"heartbeat_interval_seconds",
		"parsing.protocols", "parsing.headers_keep", "parsing.all_headers", "parsing.headers_redact", "parsing.capture_bodies",
		"parsing.body_max_bytes", "parsing.template_rules", "parsing.redaction_salt",
		"parsing.idle_timeout_seconds", "parsing.stream_buffer_kib", "parsing.total_buffer_mib", "parsing.max_connections",
	}
	if got := Paths(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Paths() =\n%v\nwant\n%v", got, want)
	}
}

func TestNormalizeFillsDefaults(t *testing.T) {
	got := Normalize(&orbweaverv1.AgentConfig{Capture: &orbweaverv1.CaptureConfig{BpfFilter: "tcp", Snaplen: 1500}})
	want := Default()
	want.Capture.BpfFilter = "tcp"
	want.Capture.Snaplen = 1500
	want.Parsing.HeadersKeep = nil // lists are taken as given
	if !proto.Equal(got, want) {
		t.Fatalf("Normalize = %v\nwant %v", got, want)
	}
	if !proto.Equal(Normalize(nil), Default()) {
		t.Fatalf("Normalize(nil) is not the defaults")
	}
	if !proto.Equal(Normalize(Default()), Default()) {
		t.Fatalf("Normalize(Default()) changed it")
	}
}

func TestLayersAndProvenance(t *testing.T) {
	defaults, verr := Update(Layer{}, &orbweaverv1.AgentConfig{
		Capture:  &orbweaverv1.CaptureConfig{BpfFilter: "tcp port 80"},
		Shipping: &orbweaverv1.ShippingConfig{BatchMaxCalls: 500},
	}, []string{"capture.bpf_filter", "shipping.batch_max_calls"}, nil)
	if verr != nil {
		t.Fatal(verr)
	}
	overrides, verr := Update(Layer{}, &orbweaverv1.AgentConfig{
		Capture:                  &orbweaverv1.CaptureConfig{BpfFilter: "tcp port 8080", Interface: "lo"},
		HeartbeatIntervalSeconds: 30,
		Parsing:                  &orbweaverv1.ParsingConfig{TemplateRules: []*orbweaverv1.TemplateRule{{Pattern: "^/u/[^/]+$", Template: "/u/{user}"}}},
	}, []string{"capture", "heartbeat_interval_seconds", "parsing.template_rules"}, nil)
	if verr != nil {
		t.Fatal(verr)
	}
	// "capture" set every capture field, including zero ones.
	if got := overrides.Paths; !reflect.DeepEqual(got, []string{"capture.interface", "capture.bpf_filter", "capture.snaplen", "capture.promiscuous",
		"capture.buffer_size_mib", "capture.mode", "capture.file_path", "heartbeat_interval_seconds", "parsing.template_rules"}) {
		t.Fatalf("override paths = %v", got)
	}
	// Narrow the overrides to what an operator would set.
	overrides, verr = Update(overrides, nil, nil, []string{"capture.snaplen", "capture.promiscuous", "capture.buffer_size_mib", "capture.mode", "capture.file_path", "capture.interface"})
	if verr != nil {
		t.Fatal(verr)
	}
	eff := Effective(defaults, overrides)
	if eff.Capture.BpfFilter != "tcp port 8080" || eff.Shipping.BatchMaxCalls != 500 || eff.HeartbeatIntervalSeconds != 30 ||
		eff.Capture.Snaplen != 262144 || eff.Capture.Interface != "" || len(eff.Parsing.TemplateRules) != 1 {
		t.Fatalf("effective = %v", eff)
	}
	got := map[string]string{}
	for _, f := range Fields(defaults, overrides) {
		got[f.Path] = f.Source + " " + f.Value
	}
	want := map[string]string{
		"capture.bpf_filter":         `override "tcp port 8080"`,
		"shipping.batch_max_calls":   "default 500",
		"capture.snaplen":            "builtin 262144",
		"heartbeat_interval_seconds": "override 30",
		"parsing.protocols":          `builtin ["http"]`,
		"parsing.template_rules":     `override [{"pattern":"^/u/[^/]+$","template":"/u/{user}"}]`,
		"capture.interface":          `builtin ""`,
		"parsing.capture_bodies":     "builtin false",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("field %s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(Paths()) {
		t.Errorf("Fields has %d entries, want %d", len(got), len(Paths()))
	}
	// Clearing the override falls back to the server default.
	cleared, verr := Update(overrides, nil, nil, []string{"capture.bpf_filter"})
	if verr != nil {
		t.Fatal(verr)
	}
	if f := Effective(defaults, cleared).Capture.BpfFilter; f != "tcp port 80" {
		t.Fatalf("after clearing the override the filter is %q, want the default", f)
	}
	if overrides.Config.Capture.BpfFilter != "tcp port 8080" {
		t.Fatal("Update modified its input layer")
	}
}

func TestUpdateErrors(t *testing.T) {
	tests := []struct {
		name       string
		set, clear []string
		want       []string
	}{
		{name: "empty", want: []string{`update_mask: must name at least one field, e.g. "capture.bpf_filter"`}},
		{name: "unknown paths together", set: []string{"capture.nope", "capture.bpf_filter"}, clear: []string{"bogus"}, want: []string{
			"capture.nope: unknown field in update_mask", "bogus: unknown field in clear_mask"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, verr := Update(Layer{}, nil, tt.set, tt.clear)
			if verr == nil || len(verr.Fields) != len(tt.want) {
				t.Fatalf("errors = %v, want %d", verr, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(verr.Fields[i].Error(), w) {
					t.Errorf("error %d = %q, want prefix %q", i, verr.Fields[i].Error(), w)
				}
			}
		})
	}
}

func TestValidateReturnsEveryError(t *testing.T) {
	cfg := Default()
	cfg.Capture.Snaplen = 10
	cfg.Capture.Interface = "eth9"
	cfg.Capture.BpfFilter = "tcp port"
	cfg.Capture.Mode = "file"
	cfg.Shipping.MaxInFlightBatches = 5000
	cfg.HeartbeatIntervalSeconds = 0
	cfg.Parsing.Protocols = []string{"http", "mqtt"}
	cfg.Parsing.HeadersRedact = []string{"x-secret", "bad header"}
	cfg.Parsing.TemplateRules = []*orbweaverv1.TemplateRule{{Pattern: "([", Template: "x"}}
	env := Env{
		Interfaces: []string{"lo", "eth0"},
		CompileFilter: func(expr string, snaplen int) error {
			if snaplen != 262144 {
				t.Errorf("snaplen passed to the compiler = %d, want the default for an invalid one", snaplen)
			}
			return errors.New("bpf filter: syntax error")
		},
	}
	verr := Validate(cfg, env)
	want := []string{
		"capture.snaplen: 10 is out of range [64, 262144]",
		"shipping.max_in_flight_batches: 5000 is out of range [1, 1024]",
		"heartbeat_interval_seconds: 0 is out of range [1, 3600]",
		`capture.file_path: is required when capture.mode is "file"`,
		`capture.interface: the agent has no interface "eth9" (it has: lo, eth0)`,
		"capture.bpf_filter: does not compile: syntax error",
		`parsing.protocols[1]: unknown protocol "mqtt" (known: http)`,
		`parsing.headers_redact[1]: "bad header" is not a header name`,
		"parsing.template_rules[0].pattern: does not compile: error parsing regexp: missing closing ]: `[`",
		`parsing.template_rules[0].template: "x" must start with /`,
	}
	var got []string
	if verr != nil {
		for _, f := range verr.Fields {
			got = append(got, f.Error())
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Validate =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if verr := Validate(Default(), env); verr != nil && len(verr.Fields) > 0 {
		t.Fatalf("defaults do not validate: %v", verr)
	}
}
