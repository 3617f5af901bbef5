// Package agentconfig owns the agent configuration model: built-in
// defaults, layers of settings (server-wide defaults, per-agent overrides)
// resolved into an effective config with each field's source, field masks,
// and field-by-field validation. The controller decides configs with it; the
// agent uses it to fill and check what it receives.
//
// A field is named by its dotted proto path, e.g. "capture.bpf_filter"; a
// message path ("capture") in a mask stands for all its fields.
package agentconfig

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

// Default returns the built-in defaults. Interface "" means the agent's own
// choice (its --interface flag); mode "" means the agent's own mode.
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
			QueueMaxBytes:      64 << 20,
		},
		HeartbeatIntervalSeconds: 5,
		Parsing: &orbweaverv1.ParsingConfig{
			Protocols:          []string{"http"},
			HeadersKeep:        []string{"accept", "accept-encoding", "content-encoding", "cache-control", "x-b3-traceid", "x-correlation-id"},
			BodyMaxBytes:       4096,
			IdleTimeoutSeconds: 120,
			StreamBufferKib:    256,
			TotalBufferMib:     64,
			MaxConnections:     200000,
		},
	}
}

// Sources of a field's value, as reported in orbweaverv1.ConfigField.
const (
	SourceBuiltin  = "builtin"
	SourceDefault  = "default"
	SourceOverride = "override"
)

var (
	rootDesc  = (&orbweaverv1.AgentConfig{}).ProtoReflect().Descriptor()
	leafPaths = collectLeaves(rootDesc, "")
)

// collectLeaves lists every settable field path: scalars, repeated fields,
// and nothing else; singular messages are walked into.
func collectLeaves(md protoreflect.MessageDescriptor, prefix string) []string {
	var out []string
	fields := md.Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		p := prefix + string(f.Name())
		if f.Kind() == protoreflect.MessageKind && !f.IsList() && !f.IsMap() {
			out = append(out, collectLeaves(f.Message(), p+".")...)
			continue
		}
		out = append(out, p)
	}
	return out
}

// Paths returns every field path, in declaration order.
func Paths() []string { return slices.Clone(leafPaths) }

// expand turns a mask path into the leaf paths it names; ok is false for an
// unknown path.
func expand(path string) (leaves []string, ok bool) {
	for _, l := range leafPaths {
		if l == path || strings.HasPrefix(l, path+".") {
			leaves = append(leaves, l)
		}
	}
	return leaves, len(leaves) > 0
}

// field resolves a leaf path to its message (created on the way when
// mutable) and field descriptor.
func field(m protoreflect.Message, path string, mutable bool) (protoreflect.Message, protoreflect.FieldDescriptor) {
	parts := strings.Split(path, ".")
	for _, name := range parts[:len(parts)-1] {
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return nil, nil
		}
		if mutable {
			m = m.Mutable(fd).Message()
		} else {
			m = m.Get(fd).Message()
		}
	}
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(parts[len(parts)-1]))
	return m, fd
}

// copyField sets dst's leaf path to src's value.
func copyField(dst, src *orbweaverv1.AgentConfig, path string) {
	sm, sfd := field(src.ProtoReflect(), path, false)
	dm, dfd := field(dst.ProtoReflect(), path, true)
	if sfd == nil || dfd == nil {
		return
	}
	if !sm.Has(sfd) {
		dm.Clear(dfd)
		return
	}
	v := sm.Get(sfd)
	if sfd.IsList() {
		l := dm.Mutable(dfd).List()
		l.Truncate(0)
		sl := v.List()
		for i := range sl.Len() {
			e := sl.Get(i)
			if sfd.Kind() == protoreflect.MessageKind {
				e = protoreflect.ValueOfMessage(proto.Clone(e.Message().Interface()).ProtoReflect())
			}
			l.Append(e)
		}
		return
	}
	dm.Set(dfd, v)
}

// Layer is a sparse set of settings: the fields named in Paths take their
// value from Config. The zero Layer sets nothing.
type Layer struct {
	Config *orbweaverv1.AgentConfig
	Paths  []string
}

// Has reports whether the layer sets path.
func (l Layer) Has(path string) bool { return slices.Contains(l.Paths, path) }

// apply copies the layer's fields onto cfg.
func (l Layer) apply(cfg *orbweaverv1.AgentConfig) {
	for _, p := range l.Paths {
		copyField(cfg, l.Config, p)
	}
}

// Effective resolves built-in defaults, then the server-wide defaults, then
// an agent's overrides, into the config the agent runs with.
func Effective(defaults, overrides Layer) *orbweaverv1.AgentConfig {
	cfg := Default()
	defaults.apply(cfg)
	overrides.apply(cfg)
	return cfg
}

// Fields lists every field of the effective config with its value (JSON)
// and source.
func Fields(defaults, overrides Layer) []*orbweaverv1.ConfigField {
	cfg := Effective(defaults, overrides)
	out := make([]*orbweaverv1.ConfigField, 0, len(leafPaths))
	for _, p := range leafPaths {
		src := SourceBuiltin
		switch {
		case overrides.Has(p):
			src = SourceOverride
		case defaults.Has(p):
			src = SourceDefault
		}
		out = append(out, &orbweaverv1.ConfigField{Path: p, Value: valueJSON(cfg, p), Source: src})
	}
	return out
}

// Update returns a copy of layer with the fields in set taken from update
// and the fields in clear removed. Mask paths may name messages ("capture")
// for all their fields. Unknown paths are field errors, reported together.
func Update(layer Layer, update *orbweaverv1.AgentConfig, set, clear []string) (Layer, *ValidationError) {
	if len(set) == 0 && len(clear) == 0 {
		return Layer{}, &ValidationError{Fields: []FieldError{{"update_mask", `must name at least one field, e.g. "capture.bpf_filter"`}}}
	}
	if update == nil {
		update = &orbweaverv1.AgentConfig{}
	}
	var errs []FieldError
	setLeaves := resolve(set, "update_mask", &errs)
	clearLeaves := resolve(clear, "clear_mask", &errs)
	if len(errs) > 0 {
		return Layer{}, &ValidationError{Fields: errs}
	}
	out := Layer{Config: &orbweaverv1.AgentConfig{}}
	if layer.Config != nil {
		out.Config = proto.Clone(layer.Config).(*orbweaverv1.AgentConfig)
	}
	for _, p := range layer.Paths {
		if !slices.Contains(clearLeaves, p) && !slices.Contains(setLeaves, p) {
			out.Paths = append(out.Paths, p)
		}
	}
	for _, p := range clearLeaves {
		m, fd := field(out.Config.ProtoReflect(), p, true)
		if fd != nil {
			m.Clear(fd)
		}
	}
	for _, p := range setLeaves {
		copyField(out.Config, update, p)
		out.Paths = append(out.Paths, p)
	}
	// Keep paths in declaration order so equal layers compare equal.
	slices.SortFunc(out.Paths, func(a, b string) int { return slices.Index(leafPaths, a) - slices.Index(leafPaths, b) })
	return out, nil
}

func resolve(paths []string, mask string, errs *[]FieldError) []string {
	var out []string
	for _, p := range paths {
		leaves, ok := expand(p)
		if !ok {
			*errs = append(*errs, FieldError{p, "unknown field in " + mask + " (known: " + strings.Join(leafPaths, ", ") + ")"})
			continue
		}
		for _, l := range leaves {
			if !slices.Contains(out, l) {
				out = append(out, l)
			}
		}
	}
	return out
}

// Normalize returns a copy of cfg with every zero numeric field replaced by
// its built-in default and nil messages filled in (what an agent does with
// a config from an older controller). Strings, booleans and lists keep
// their value.
func Normalize(cfg *orbweaverv1.AgentConfig) *orbweaverv1.AgentConfig {
	out := Default()
	if cfg == nil {
		return out
	}
	src := cfg.ProtoReflect()
	for _, p := range leafPaths {
		sm, fd := field(src, p, false)
		if fd == nil {
			continue
		}
		if !fd.IsList() && isNumeric(fd.Kind()) && !sm.Has(fd) {
			continue // zero: keep the default
		}
		if fd.IsList() && !sm.Has(fd) && p == "parsing.protocols" {
			continue // no protocol list means the default decoders
		}
		copyField(out, cfg, p)
	}
	return out
}

func isNumeric(k protoreflect.Kind) bool {
	switch k {
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Int32Kind, protoreflect.Int64Kind,
		protoreflect.DoubleKind, protoreflect.FloatKind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		return true
	}
	return false
}
