// Package agentconfig owns the agent configuration model: built-in default
// values, field-by-field validation, and applying an update under a field
// mask. It is used by the controller (to decide and validate) and by the
// agent (to fill unset fields).
package agentconfig

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

// Default returns the built-in defaults. Interface "" means the agent's own
// choice (its --interface flag, else the first non-loopback interface).
func Default() *orbweaverv1.AgentConfig {
	return &orbweaverv1.AgentConfig{
		Capture: &orbweaverv1.CaptureConfig{
			Snaplen:       262144,
			Promiscuous:   false,
			BufferSizeMib: 32,
		},
		Shipping: &orbweaverv1.ShippingConfig{
			BatchMaxCalls:      1000,
			BatchMaxDelayMs:    200,
			QueueMaxCalls:      100000,
			MaxInFlightBatches: 8,
		},
		HeartbeatIntervalSeconds: 5,
	}
}

// Paths lists every settable field path, in a stable order.
var paths = []string{
	"capture.interface",
	"capture.bpf_filter",
	"capture.snaplen",
	"capture.promiscuous",
	"capture.buffer_size_mib",
	"shipping.batch_max_calls",
	"shipping.batch_max_delay_ms",
	"shipping.queue_max_calls",
	"shipping.max_in_flight_batches",
	"heartbeat_interval_seconds",
}

// Paths returns every field path an update mask may name.
func Paths() []string { return slices.Clone(paths) }

// Normalize returns a copy of cfg with every zero numeric field replaced by
// its default, and nil sub-messages filled in. Strings and booleans keep
// their value (their zero value is meaningful).
func Normalize(cfg *orbweaverv1.AgentConfig) *orbweaverv1.AgentConfig {
	d := Default()
	out := proto.Clone(d).(*orbweaverv1.AgentConfig)
	if cfg == nil {
		return out
	}
	if c := cfg.GetCapture(); c != nil {
		out.Capture.Interface = c.GetInterface()
		out.Capture.BpfFilter = c.GetBpfFilter()
		out.Capture.Promiscuous = c.GetPromiscuous()
		out.Capture.Snaplen = orDefault(c.GetSnaplen(), d.Capture.Snaplen)
		out.Capture.BufferSizeMib = orDefault(c.GetBufferSizeMib(), d.Capture.BufferSizeMib)
	}
	if s := cfg.GetShipping(); s != nil {
		out.Shipping.BatchMaxCalls = orDefault(s.GetBatchMaxCalls(), d.Shipping.BatchMaxCalls)
		out.Shipping.BatchMaxDelayMs = orDefault(s.GetBatchMaxDelayMs(), d.Shipping.BatchMaxDelayMs)
		out.Shipping.QueueMaxCalls = orDefault(s.GetQueueMaxCalls(), d.Shipping.QueueMaxCalls)
		out.Shipping.MaxInFlightBatches = orDefault(s.GetMaxInFlightBatches(), d.Shipping.MaxInFlightBatches)
	}
	out.HeartbeatIntervalSeconds = orDefault(cfg.GetHeartbeatIntervalSeconds(), d.HeartbeatIntervalSeconds)
	return out
}

func orDefault(v, d uint32) uint32 {
	if v == 0 {
		return d
	}
	return v
}

// FieldError is one invalid field.
type FieldError struct {
	Field   string
	Message string
}

func (e FieldError) Error() string { return e.Field + ": " + e.Message }

// ValidationError carries every field error of one update.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Error()
	}
	return "invalid config: " + strings.Join(parts, "; ")
}

// Env is what validation needs to know about the agent and the host.
type Env struct {
	// Interfaces the agent reported; when empty, the interface name is not
	// checked (the agent has not said hello yet).
	Interfaces []string
	// CompileFilter compiles a BPF expression for the given snaplen; nil
	// skips the check.
	CompileFilter func(expr string, snaplen int) error
}

type bound struct {
	path     string
	get      func(*orbweaverv1.AgentConfig) uint32
	min, max uint32
}

var bounds = []bound{
	{"capture.snaplen", func(c *orbweaverv1.AgentConfig) uint32 { return c.GetCapture().GetSnaplen() }, 64, 262144},
	{"capture.buffer_size_mib", func(c *orbweaverv1.AgentConfig) uint32 { return c.GetCapture().GetBufferSizeMib() }, 1, 4096},
	{"shipping.batch_max_calls", func(c *orbweaverv1.AgentConfig) uint32 { return c.GetShipping().GetBatchMaxCalls() }, 1, 100000},
	{"shipping.batch_max_delay_ms", func(c *orbweaverv1.AgentConfig) uint32 { return c.GetShipping().GetBatchMaxDelayMs() }, 10, 60000},
	{"shipping.queue_max_calls", func(c *orbweaverv1.AgentConfig) uint32 { return c.GetShipping().GetQueueMaxCalls() }, 1, 10000000},
	{"shipping.max_in_flight_batches", func(c *orbweaverv1.AgentConfig) uint32 { return c.GetShipping().GetMaxInFlightBatches() }, 1, 1024},
	{"heartbeat_interval_seconds", func(c *orbweaverv1.AgentConfig) uint32 { return c.GetHeartbeatIntervalSeconds() }, 1, 3600},
}

// Validate checks a normalized config and returns every problem at once
// (nil when valid).
func Validate(cfg *orbweaverv1.AgentConfig, env Env) *ValidationError {
	var errs []FieldError
	for _, b := range bounds {
		if v := b.get(cfg); v < b.min || v > b.max {
			errs = append(errs, FieldError{b.path, fmt.Sprintf("%d is out of range [%d, %d]", v, b.min, b.max)})
		}
	}
	if name := cfg.GetCapture().GetInterface(); name != "" && len(env.Interfaces) > 0 && !slices.Contains(env.Interfaces, name) {
		errs = append(errs, FieldError{"capture.interface", fmt.Sprintf("the agent has no interface %q (it has: %s)", name, strings.Join(env.Interfaces, ", "))})
	}
	if expr := cfg.GetCapture().GetBpfFilter(); expr != "" && env.CompileFilter != nil {
		snap := int(cfg.GetCapture().GetSnaplen())
		if snap < 64 {
			snap = 262144
		}
		if err := env.CompileFilter(expr, snap); err != nil {
			errs = append(errs, FieldError{"capture.bpf_filter", "does not compile: " + strings.TrimPrefix(err.Error(), "bpf filter: ")})
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return &ValidationError{Fields: errs}
}

// Apply returns base with the fields named in mask copied from update. An
// unknown path is a field error; an empty mask is an error on "update_mask".
func Apply(base, update *orbweaverv1.AgentConfig, mask []string) (*orbweaverv1.AgentConfig, *ValidationError) {
	out := Normalize(base)
	if len(mask) == 0 {
		return nil, &ValidationError{Fields: []FieldError{{"update_mask", "must name at least one field, e.g. \"capture.bpf_filter\""}}}
	}
	if update == nil {
		update = &orbweaverv1.AgentConfig{}
	}
	var errs []FieldError
	for _, p := range mask {
		switch p {
		case "capture":
			for _, sub := range paths[:5] {
				set(out, update, sub)
			}
		case "shipping":
			for _, sub := range paths[5:9] {
				set(out, update, sub)
			}
		default:
			if !set(out, update, p) {
				errs = append(errs, FieldError{p, "unknown field (known: " + strings.Join(paths, ", ") + ")"})
			}
		}
	}
	if len(errs) > 0 {
		return nil, &ValidationError{Fields: errs}
	}
	return out, nil
}

func set(dst, src *orbweaverv1.AgentConfig, path string) bool {
	sc, ss := src.GetCapture(), src.GetShipping()
	switch path {
	case "capture.interface":
		dst.Capture.Interface = sc.GetInterface()
	case "capture.bpf_filter":
		dst.Capture.BpfFilter = sc.GetBpfFilter()
	case "capture.snaplen":
		dst.Capture.Snaplen = sc.GetSnaplen()
	case "capture.promiscuous":
		dst.Capture.Promiscuous = sc.GetPromiscuous()
	case "capture.buffer_size_mib":
		dst.Capture.BufferSizeMib = sc.GetBufferSizeMib()
	case "shipping.batch_max_calls":
		dst.Shipping.BatchMaxCalls = ss.GetBatchMaxCalls()
	case "shipping.batch_max_delay_ms":
		dst.Shipping.BatchMaxDelayMs = ss.GetBatchMaxDelayMs()
	case "shipping.queue_max_calls":
		dst.Shipping.QueueMaxCalls = ss.GetQueueMaxCalls()
	case "shipping.max_in_flight_batches":
		dst.Shipping.MaxInFlightBatches = ss.GetMaxInFlightBatches()
	case "heartbeat_interval_seconds":
		dst.HeartbeatIntervalSeconds = src.GetHeartbeatIntervalSeconds()
	default:
		return false
	}
	return true
}
