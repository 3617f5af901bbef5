package agentconfig

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

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
	// checked (server-wide defaults, or an agent that has not said hello).
	Interfaces []string
	// CompileFilter compiles a BPF expression for the given snaplen; nil
	// skips the check.
	CompileFilter func(expr string, snaplen int) error
}

// Protocols lists the decoders an agent can run.
var protocols = []string{"http"}

type bound struct {
	path     string
	min, max uint64
}

var bounds = []bound{
	{"capture.snaplen", 64, 262144},
	{"capture.buffer_size_mib", 1, 4096},
	{"shipping.batch_max_calls", 1, 100000},
	{"shipping.batch_max_delay_ms", 10, 60000},
	{"shipping.queue_max_calls", 1, 10000000},
	{"shipping.max_in_flight_batches", 1, 1024},
	{"shipping.queue_max_bytes", 1 << 20, 4 << 30},
	{"heartbeat_interval_seconds", 1, 3600},
	{"parsing.body_max_bytes", 0, 1 << 20},
	{"parsing.idle_timeout_seconds", 1, 86400},
	{"parsing.stream_buffer_kib", 16, 65536},
	{"parsing.total_buffer_mib", 1, 4096},
	{"parsing.max_connections", 100, 10000000},
}

var headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// Validate checks a config and returns every problem at once (nil when
// valid).
func Validate(cfg *orbweaverv1.AgentConfig, env Env) *ValidationError {
	var errs []FieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, FieldError{path, fmt.Sprintf(format, args...)})
	}
	m := cfg.ProtoReflect()
	for _, b := range bounds {
		sm, fd := field(m, b.path, false)
		v := sm.Get(fd).Uint()
		if v < b.min || v > b.max {
			add(b.path, "%d is out of range [%d, %d]", v, b.min, b.max)
		}
	}
	c := cfg.GetCapture()
	switch c.GetMode() {
	case "", "interface":
	case "file":
		if c.GetFilePath() == "" {
			add("capture.file_path", `is required when capture.mode is "file"`)
		}
	default:
		add("capture.mode", `%q is not a mode (use "interface", "file" or "" for the agent's own)`, c.GetMode())
	}
	if name := c.GetInterface(); name != "" && len(env.Interfaces) > 0 && !slices.Contains(env.Interfaces, name) {
		add("capture.interface", "the agent has no interface %q (it has: %s)", name, strings.Join(env.Interfaces, ", "))
	}
	if expr := c.GetBpfFilter(); expr != "" && env.CompileFilter != nil {
		snap := int(c.GetSnaplen())
		if snap < 64 || snap > 262144 {
			snap = 262144
		}
		if err := env.CompileFilter(expr, snap); err != nil {
			add("capture.bpf_filter", "does not compile: %s", strings.TrimPrefix(err.Error(), "bpf filter: "))
		}
	}
	p := cfg.GetParsing()
	if len(p.GetProtocols()) == 0 {
		add("parsing.protocols", "must enable at least one protocol (known: %s)", strings.Join(protocols, ", "))
	}
	for i, proto := range p.GetProtocols() {
		if !slices.Contains(protocols, proto) {
			add(fmt.Sprintf("parsing.protocols[%d]", i), "unknown protocol %q (known: %s)", proto, strings.Join(protocols, ", "))
		}
	}
	for _, list := range []struct {
		path  string
		names []string
	}{{"parsing.headers_keep", p.GetHeadersKeep()}, {"parsing.headers_redact", p.GetHeadersRedact()}} {
		for i, h := range list.names {
			if !headerName.MatchString(h) {
				add(fmt.Sprintf("%s[%d]", list.path, i), "%q is not a header name", h)
			}
		}
	}
	for i, r := range p.GetTemplateRules() {
		if _, err := regexp.Compile(r.GetPattern()); err != nil || r.GetPattern() == "" {
			msg := "must not be empty"
			if err != nil {
				msg = "does not compile: " + err.Error()
			}
			add(fmt.Sprintf("parsing.template_rules[%d].pattern", i), "%s", msg)
		}
		if !strings.HasPrefix(r.GetTemplate(), "/") {
			add(fmt.Sprintf("parsing.template_rules[%d].template", i), "%q must start with /", r.GetTemplate())
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return &ValidationError{Fields: errs}
}

// valueJSON renders one leaf field of cfg as JSON.
func valueJSON(cfg *orbweaverv1.AgentConfig, path string) string {
	m, fd := field(cfg.ProtoReflect(), path, false)
	if fd == nil {
		return "null"
	}
	v := m.Get(fd)
	var out any
	if fd.IsList() {
		l := v.List()
		items := make([]any, 0, l.Len())
		for i := range l.Len() {
			items = append(items, goValue(fd, l.Get(i)))
		}
		out = items
	} else {
		out = goValue(fd, v)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "null"
	}
	return string(b)
}

func goValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.BoolKind:
		return v.Bool()
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		return v.Uint()
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind:
		return v.Int()
	case protoreflect.MessageKind:
		obj := map[string]any{}
		msg := v.Message()
		fields := msg.Descriptor().Fields()
		for i := range fields.Len() {
			f := fields.Get(i)
			if !f.IsList() {
				obj[string(f.Name())] = goValue(f, msg.Get(f))
			}
		}
		return obj
	}
	return nil
}
