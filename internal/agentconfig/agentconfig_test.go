package agentconfig

import (
	"errors"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

func TestNormalizeFillsDefaults(t *testing.T) {
	got := Normalize(&orbweaverv1.AgentConfig{Capture: &orbweaverv1.CaptureConfig{BpfFilter: "tcp", Snaplen: 1500}})
	want := Default()
	want.Capture.BpfFilter = "tcp"
	want.Capture.Snaplen = 1500
	if !proto.Equal(got, want) {
		t.Fatalf("Normalize = %v, want %v", got, want)
	}
	if !proto.Equal(Normalize(nil), Default()) {
		t.Fatalf("Normalize(nil) is not the defaults")
	}
}

func TestApply(t *testing.T) {
	base := Default()
	update := &orbweaverv1.AgentConfig{
		Capture:                  &orbweaverv1.CaptureConfig{BpfFilter: "port 80", Snaplen: 9000, Interface: "lo"},
		Shipping:                 &orbweaverv1.ShippingConfig{BatchMaxCalls: 10},
		HeartbeatIntervalSeconds: 30,
	}
	tests := []struct {
		name    string
		mask    []string
		check   func(*orbweaverv1.AgentConfig) bool
		wantErr []FieldError
	}{
		{name: "one field", mask: []string{"capture.bpf_filter"}, check: func(c *orbweaverv1.AgentConfig) bool {
			return c.Capture.BpfFilter == "port 80" && c.Capture.Snaplen == 262144 && c.HeartbeatIntervalSeconds == 5
		}},
		{name: "whole capture message", mask: []string{"capture"}, check: func(c *orbweaverv1.AgentConfig) bool {
			return c.Capture.BpfFilter == "port 80" && c.Capture.Snaplen == 9000 && c.Capture.Interface == "lo" && c.Capture.BufferSizeMib == 0
		}},
		{name: "top level", mask: []string{"heartbeat_interval_seconds", "shipping.batch_max_calls"}, check: func(c *orbweaverv1.AgentConfig) bool {
			return c.HeartbeatIntervalSeconds == 30 && c.Shipping.BatchMaxCalls == 10 && c.Shipping.QueueMaxCalls == 100000
		}},
		{name: "empty mask", mask: nil, wantErr: []FieldError{{"update_mask", `must name at least one field, e.g. "capture.bpf_filter"`}}},
		{name: "unknown paths reported together", mask: []string{"capture.nope", "capture.bpf_filter", "bogus"}, wantErr: []FieldError{
			{"capture.nope", "unknown field (known: capture.interface, capture.bpf_filter, capture.snaplen, capture.promiscuous, capture.buffer_size_mib, shipping.batch_max_calls, shipping.batch_max_delay_ms, shipping.queue_max_calls, shipping.max_in_flight_batches, heartbeat_interval_seconds)"},
			{"bogus", "unknown field (known: capture.interface, capture.bpf_filter, capture.snaplen, capture.promiscuous, capture.buffer_size_mib, shipping.batch_max_calls, shipping.batch_max_delay_ms, shipping.queue_max_calls, shipping.max_in_flight_batches, heartbeat_interval_seconds)"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, verr := Apply(base, update, tt.mask)
			if tt.wantErr != nil {
				if verr == nil || !reflect.DeepEqual(verr.Fields, tt.wantErr) {
					t.Fatalf("errors = %+v, want %+v", verr, tt.wantErr)
				}
				return
			}
			if verr != nil {
				t.Fatalf("unexpected error: %v", verr)
			}
			if !tt.check(got) {
				t.Fatalf("unexpected result: %v", got)
			}
			if !proto.Equal(base, Default()) {
				t.Fatalf("Apply modified its base")
			}
		})
	}
}

func TestValidateReturnsEveryError(t *testing.T) {
	cfg := Default()
	cfg.Capture.Snaplen = 10
	cfg.Capture.Interface = "eth9"
	cfg.Capture.BpfFilter = "tcp port"
	cfg.Shipping.MaxInFlightBatches = 5000
	cfg.HeartbeatIntervalSeconds = 0
	env := Env{
		Interfaces: []string{"lo", "eth0"},
		CompileFilter: func(expr string, snaplen int) error {
			if snaplen != 262144 {
				t.Errorf("snaplen passed to the compiler = %d, want the default for an invalid one", snaplen)
			}
			return errors.New("syntax error")
		},
	}
	verr := Validate(cfg, env)
	want := []FieldError{
		{"capture.snaplen", "10 is out of range [64, 262144]"},
		{"shipping.max_in_flight_batches", "5000 is out of range [1, 1024]"},
		{"heartbeat_interval_seconds", "0 is out of range [1, 3600]"},
		{"capture.interface", `the agent has no interface "eth9" (it has: lo, eth0)`},
		{"capture.bpf_filter", "does not compile: syntax error"},
	}
	if verr == nil || !reflect.DeepEqual(verr.Fields, want) {
		t.Fatalf("Validate = %+v\nwant %+v", verr, want)
	}
	if Validate(Default(), env) != nil {
		t.Fatalf("defaults do not validate")
	}
}
