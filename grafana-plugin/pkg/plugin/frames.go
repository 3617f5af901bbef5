package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/data"

	qb "github.com/orbweaver/orbweaver/grafana-plugin/pkg/querybuilder"
)

// calls answers a calls query with a table frame, or a log-lines frame when
// q.Format is "logs".
func (d *Datasource) calls(ctx context.Context, q qb.Query, tr qb.TimeRange) (data.Frames, error) {
	st, err := qb.Calls(q, tr)
	if err != nil {
		return nil, err
	}
	f, err := d.frameOf(ctx, st, "calls", "time")
	if err != nil {
		return nil, err
	}
	rows, _ := f.RowLen()
	if q.Format == "logs" {
		f, err = logsFrame(f)
		if err != nil {
			return nil, err
		}
		d.linkCalls(f, tr)
	} else {
		d.decorateCalls(f, tr)
		f.Meta = &data.FrameMeta{PreferredVisualization: data.VisTypeTable}
	}
	f.Meta.ExecutedQueryString = executed(st)
	f.Meta.Notices = limitNotices(st, rows, "calls")
	return data.Frames{f}, nil
}

// decorateCalls sets units and the id column's links.
func (d *Datasource) decorateCalls(f *data.Frame, tr qb.TimeRange) {
	setUnit(f, "duration_ms", "ms")
	setUnit(f, "request_body_size", "decbytes")
	setUnit(f, "response_body_size", "decbytes")
	d.linkCalls(f, tr)
}

// linkCalls links the id field of a calls frame to the call tree and to
// the concurrent calls of the row's call, in this datasource.
func (d *Datasource) linkCalls(f *data.Frame, tr qb.TimeRange) {
	id, _ := f.FieldByName("id")
	if id == nil {
		return
	}
	rng := &data.TimeRange{From: tr.From, To: tr.To}
	link := func(title, queryType string) data.DataLink {
		return data.DataLink{Title: title, Internal: &data.InternalDataLink{
			DatasourceUID: d.uid,
			Query:         map[string]any{"queryType": queryType, "callId": "${__value.raw}"},
			Range:         rng,
		}}
	}
	id.Config = &data.FieldConfig{Links: []data.DataLink{
		link("Open call tree", qb.TypeCallTree),
		link("Concurrent calls", qb.TypeConcurrent),
	}}
}

// logsFrame turns a calls frame into the log-lines shape: timestamp, body,
// severity, id and labels.
func logsFrame(calls *data.Frame) (*data.Frame, error) {
	n, _ := calls.RowLen()
	ts := make([]time.Time, n)
	body := make([]string, n)
	severity := make([]string, n)
	ids := make([]string, n)
	labels := make([]json.RawMessage, n)
	get := func(name string, i int) any { return value(calls, name, i) }
	text := func(name string, i int) string { return str(calls, name, i) }
	for i := range n {
		ts[i], _ = get("time", i).(time.Time)
		id, _ := get("id", i).(int64)
		ids[i] = strconv.FormatInt(id, 10)
		status, hasStatus := get("status", i).(int64)
		result := "no response"
		if hasStatus {
			result = strconv.FormatInt(status, 10)
		}
		if dur, ok := get("duration_ms", i).(float64); ok {
			result += fmt.Sprintf(" in %.3f ms", dur)
		}
		body[i] = fmt.Sprintf("%s %s → %s (%s:%d → %s:%d)", text("method", i), text("path", i), result,
			text("client_ip", i), intOf(get("client_port", i)), text("server_ip", i), intOf(get("server_port", i)))
		switch {
		case !hasStatus || status >= 500:
			severity[i] = "error"
		case status >= 400:
			severity[i] = "warning"
		default:
			severity[i] = "info"
		}
		l := map[string]string{"method": text("method", i), "server": text("server_ip", i), "client": text("client_ip", i),
			"host": text("host", i), "agent_id": text("agent_id", i), "parse_status": text("parse_status", i)}
		if hasStatus {
			l["status"] = strconv.FormatInt(status, 10)
		}
		for _, name := range []string{"identification", "origin", "template"} {
			if v := text(name, i); v != "" {
				l[name] = v
			}
		}
		if p := tokenProblems(calls, i); p != "" {
			l["token_problem"] = p
		}
		if b, _ := get("multiple_credentials", i).(bool); b {
			l["multiple_credentials"] = "true"
		}
		raw, err := json.Marshal(l)
		if err != nil {
			return nil, fmt.Errorf("log labels: %w", err)
		}
		labels[i] = raw
	}
	f := data.NewFrame("calls",
		data.NewField("timestamp", nil, ts),
		data.NewField("body", nil, body),
		data.NewField("severity", nil, severity),
		data.NewField("id", nil, ids),
		data.NewField("labels", nil, labels),
	)
	f.Meta = &data.FrameMeta{Type: data.FrameTypeLogLines, TypeVersion: data.FrameTypeVersion{0, 0}, PreferredVisualization: data.VisTypeLogs}
	return f, nil
}

// tokenProblems names the JWT problems of row i ("not_yet_valid",
// "expired", joined with a comma), "" when none.
func tokenProblems(f *data.Frame, i int) string {
	var p []string
	if b, _ := value(f, "token_not_yet_valid", i).(bool); b {
		p = append(p, "not_yet_valid")
	}
	if b, _ := value(f, "token_expired", i).(bool); b {
		p = append(p, "expired")
	}
	return strings.Join(p, ",")
}

func intOf(v any) int64 {
	i, _ := v.(int64)
	return i
}

// stats answers a stats query with a wide time series frame: one field per
// metric and group, the group in the field's labels.
func (d *Datasource) stats(ctx context.Context, q qb.Query, tr qb.TimeRange, interval time.Duration) (data.Frames, error) {
	dialect, err := d.dialectOf(ctx)
	if err != nil {
		return nil, err
	}
	st, err := qb.Stats(q, tr, interval, dialect)
	if err != nil {
		return nil, err
	}
	f, err := d.frameOf(ctx, st, "stats", "time")
	if err != nil {
		return nil, err
	}
	rows, _ := f.RowLen()
	if len(q.GroupBy) > 0 {
		if f, err = toWide(f); err != nil {
			return nil, fmt.Errorf("stats: %w", err)
		}
	}
	for _, unit := range []struct{ field, unit string }{
		{"rate", "reqps"}, {"error_rate", "percentunit"}, {"p50_ms", "ms"}, {"p90_ms", "ms"},
		{"p95_ms", "ms"}, {"p99_ms", "ms"}, {"bytes", "decbytes"},
	} {
		for _, fld := range f.Fields {
			if fld.Name == unit.field {
				fld.SetConfig(&data.FieldConfig{Unit: unit.unit})
			}
		}
	}
	if f.Meta == nil {
		f.Meta = &data.FrameMeta{}
	}
	f.Meta.Type = data.FrameTypeTimeSeriesWide
	f.Meta.TypeVersion = data.FrameTypeVersion{0, 1}
	f.Meta.ExecutedQueryString = executed(st)
	f.Meta.Notices = limitNotices(st, rows, "rows")
	return data.Frames{f}, nil
}

// serviceMap answers with node graph frames: edges caller→callee between IP
// addresses (calls, error %), and nodes (req/s, p95 and error arcs of the
// calls each one served).
func (d *Datasource) serviceMap(ctx context.Context, q qb.Query, tr qb.TimeRange) (data.Frames, error) {
	est, err := qb.ServiceMapEdges(q, tr)
	if err != nil {
		return nil, err
	}
	edges, err := d.frameOf(ctx, est, "edges")
	if err != nil {
		return nil, err
	}
	n, _ := edges.RowLen()
	var ips []string
	seen := map[string]bool{}
	e := struct {
		id, source, target []string
		calls, errPct      []float64
		p95                []*float64
	}{}
	for i := range n {
		src, dst := str(edges, "source", i), str(edges, "target", i)
		calls := float64(intOf(value(edges, "calls", i)))
		errs := float64(intOf(value(edges, "errors", i)))
		e.id = append(e.id, src+"->"+dst)
		e.source = append(e.source, src)
		e.target = append(e.target, dst)
		e.calls = append(e.calls, calls)
		e.errPct = append(e.errPct, 100*errs/calls)
		e.p95 = append(e.p95, floatPtr(value(edges, "p95_ms", i)))
		for _, ip := range []string{src, dst} {
			if !seen[ip] {
				seen[ip] = true
				ips = append(ips, ip)
			}
		}
	}
	nst, err := qb.ServiceMapNodes(q, tr, ips)
	if err != nil {
		return nil, err
	}
	served, err := d.frameOf(ctx, nst, "served")
	if err != nil {
		return nil, err
	}
	type stats struct {
		calls, errors float64
		p95           *float64
	}
	byIP := map[string]stats{}
	sn, _ := served.RowLen()
	for i := range sn {
		byIP[str(served, "id", i)] = stats{float64(intOf(value(served, "calls", i))), float64(intOf(value(served, "errors", i))), floatPtr(value(served, "p95_ms", i))}
	}
	seconds := tr.To.Sub(tr.From).Seconds()
	nodes := struct {
		id, title, subtitle []string
		rate, ok, errs      []float64
		p95                 []*float64
	}{}
	for _, ip := range ips {
		s, isServer := byIP[ip]
		nodes.id = append(nodes.id, ip)
		nodes.title = append(nodes.title, ip)
		role := "client"
		ok, errs := 1.0, 0.0
		if isServer {
			role = "server"
			errs = s.errors / s.calls
			ok = 1 - errs
		}
		nodes.subtitle = append(nodes.subtitle, role)
		nodes.rate = append(nodes.rate, s.calls/seconds)
		nodes.p95 = append(nodes.p95, s.p95)
		nodes.ok = append(nodes.ok, ok)
		nodes.errs = append(nodes.errs, errs)
	}
	arc := func(name, color string, v []float64) *data.Field {
		f := data.NewField(name, nil, v)
		f.Config = &data.FieldConfig{DisplayName: name[len("arc__"):], Color: map[string]any{"mode": "fixed", "fixedColor": color}}
		return f
	}
	nodeFrame := data.NewFrame("nodes",
		data.NewField("id", nil, nodes.id),
		data.NewField("title", nil, nodes.title),
		data.NewField("subtitle", nil, nodes.subtitle),
		data.NewField("mainstat", nil, nodes.rate).SetConfig(&data.FieldConfig{DisplayName: "req/s", Unit: "reqps"}),
		data.NewField("secondarystat", nil, nodes.p95).SetConfig(&data.FieldConfig{DisplayName: "p95", Unit: "ms"}),
		arc("arc__ok", "green", nodes.ok),
		arc("arc__errors", "red", nodes.errs),
	)
	edgeFrame := data.NewFrame("edges",
		data.NewField("id", nil, e.id),
		data.NewField("source", nil, e.source),
		data.NewField("target", nil, e.target),
		data.NewField("mainstat", nil, e.calls).SetConfig(&data.FieldConfig{DisplayName: "calls"}),
		data.NewField("secondarystat", nil, e.errPct).SetConfig(&data.FieldConfig{DisplayName: "errors", Unit: "percent"}),
		data.NewField("detail__p95_ms", nil, e.p95).SetConfig(&data.FieldConfig{DisplayName: "p95", Unit: "ms"}),
	)
	nodeFrame.Meta = &data.FrameMeta{PreferredVisualization: data.VisTypeNodeGraph, ExecutedQueryString: executed(est, nst)}
	edgeFrame.Meta = &data.FrameMeta{PreferredVisualization: data.VisTypeNodeGraph, ExecutedQueryString: executed(est, nst),
		Notices: limitNotices(est, n, "edges")}
	return data.Frames{nodeFrame, edgeFrame}, nil
}

// callTree answers with a trace frame: one span per call, the callee as the
// service.
func (d *Datasource) callTree(ctx context.Context, q qb.Query, tr qb.TimeRange) (data.Frames, error) {
	st, err := qb.CallTree(q, tr)
	if err != nil {
		return nil, err
	}
	calls, err := d.frameOf(ctx, st, "calls")
	if err != nil {
		return nil, err
	}
	n, _ := calls.RowLen()
	if n == 0 {
		if q.CallID == "" {
			return nil, &queryError{backend.StatusBadRequest, fmt.Sprintf("no call with trace id %s in the time range", q.TraceID)}
		}
		return nil, &queryError{backend.StatusBadRequest, fmt.Sprintf("call %s was not found in the time range", q.CallID)}
	}
	traceID := fmt.Sprintf("call-%d", intOf(value(calls, "id", 0)))
	if tp := str(calls, "traceparent", 0); len(tp) == 55 && tp[2] == '-' { // version-traceid-parentid-flags
		traceID = tp[3:35]
	}
	var (
		traceIDs, spanIDs, parents, ops, services, kinds []string
		starts, durations                                []float64
		tags, serviceTags                                []json.RawMessage
		codes                                            []int64
	)
	for i := range n {
		id := intOf(value(calls, "id", i))
		parent := ""
		if p, ok := value(calls, "parent_id", i).(int64); ok {
			parent = strconv.FormatInt(p, 10)
		}
		status, hasStatus := value(calls, "status", i).(int64)
		service := str(calls, "host", i)
		if service == "" {
			service = fmt.Sprintf("%s:%d", str(calls, "server_ip", i), intOf(value(calls, "server_port", i)))
		}
		kv := []map[string]any{
			{"key": "client", "value": fmt.Sprintf("%s:%d", str(calls, "client_ip", i), intOf(value(calls, "client_port", i)))},
			{"key": "server", "value": fmt.Sprintf("%s:%d", str(calls, "server_ip", i), intOf(value(calls, "server_port", i)))},
			{"key": "http.method", "value": str(calls, "method", i)},
			{"key": "http.path", "value": str(calls, "path", i)},
			{"key": "request_body_size", "value": intOf(value(calls, "request_body_size", i))},
			{"key": "response_body_size", "value": intOf(value(calls, "response_body_size", i))},
			{"key": "parse_status", "value": str(calls, "parse_status", i)},
			{"key": "call_id", "value": strconv.FormatInt(id, 10)},
		}
		for _, name := range []string{"identification", "template"} {
			if v := str(calls, name, i); v != "" {
				kv = append(kv, map[string]any{"key": name, "value": v})
			}
		}
		for _, name := range []string{"token_not_yet_valid", "token_expired"} {
			if b, _ := value(calls, name, i).(bool); b {
				kv = append(kv, map[string]any{"key": name, "value": true})
			}
		}
		code := int64(1)
		if hasStatus {
			kv = append(kv, map[string]any{"key": "http.status_code", "value": status})
		}
		if !hasStatus || status >= 500 {
			code = 2
			kv = append(kv, map[string]any{"key": "error", "value": true})
		}
		tagJSON, err := json.Marshal(kv)
		if err != nil {
			return nil, fmt.Errorf("span tags: %w", err)
		}
		svcJSON, err := json.Marshal([]map[string]any{{"key": "server.address", "value": str(calls, "server_ip", i)}})
		if err != nil {
			return nil, fmt.Errorf("service tags: %w", err)
		}
		traceIDs = append(traceIDs, traceID)
		spanIDs = append(spanIDs, strconv.FormatInt(id, 10))
		parents = append(parents, parent)
		ops = append(ops, str(calls, "method", i)+" "+str(calls, "path", i))
		services = append(services, service)
		kinds = append(kinds, "server")
		starts = append(starts, floatOf(value(calls, "start_ms", i)))
		durations = append(durations, floatOf(value(calls, "duration_ms", i)))
		tags = append(tags, tagJSON)
		serviceTags = append(serviceTags, svcJSON)
		codes = append(codes, code)
	}
	f := data.NewFrame("trace",
		data.NewField("traceID", nil, traceIDs),
		data.NewField("spanID", nil, spanIDs),
		data.NewField("parentSpanID", nil, parents),
		data.NewField("operationName", nil, ops),
		data.NewField("serviceName", nil, services),
		data.NewField("serviceTags", nil, serviceTags),
		data.NewField("startTime", nil, starts),
		data.NewField("duration", nil, durations),
		data.NewField("tags", nil, tags),
		data.NewField("kind", nil, kinds),
		data.NewField("statusCode", nil, codes),
	)
	f.Meta = &data.FrameMeta{PreferredVisualization: data.VisTypeTrace, ExecutedQueryString: executed(st), Notices: limitNotices(st, n, "spans")}
	return data.Frames{f}, nil
}

// concurrent answers with a table of the calls overlapping one call on the
// same server ip:port.
func (d *Datasource) concurrent(ctx context.Context, q qb.Query, tr qb.TimeRange) (data.Frames, error) {
	st, err := qb.Concurrent(q, tr)
	if err != nil {
		return nil, err
	}
	f, err := d.frameOf(ctx, st, "concurrent", "time")
	if err != nil {
		return nil, err
	}
	rows, _ := f.RowLen()
	d.decorateCalls(f, tr)
	f.Meta = &data.FrameMeta{PreferredVisualization: data.VisTypeTable, ExecutedQueryString: executed(st), Notices: limitNotices(st, rows, "calls")}
	return data.Frames{f}, nil
}

// agents answers with the agents table, or with their heartbeats as a wide
// time series (one field per counter and agent) when q.AgentView is
// "heartbeats".
func (d *Datasource) agents(ctx context.Context, q qb.Query, tr qb.TimeRange) (data.Frames, error) {
	switch q.AgentView {
	case "", "table":
		st, err := qb.Agents(q, tr)
		if err != nil {
			return nil, err
		}
		f, err := d.frameOf(ctx, st, "agents", "first_seen", "last_seen")
		if err != nil {
			return nil, err
		}
		rows, _ := f.RowLen()
		f.Meta = &data.FrameMeta{PreferredVisualization: data.VisTypeTable, ExecutedQueryString: executed(st), Notices: limitNotices(st, rows, "agents")}
		return data.Frames{f}, nil
	case "heartbeats":
		st, err := qb.Heartbeats(q, tr)
		if err != nil {
			return nil, err
		}
		f, err := d.frameOf(ctx, st, "heartbeats", "time")
		if err != nil {
			return nil, err
		}
		rows, _ := f.RowLen()
		if f, err = toWide(f); err != nil {
			return nil, fmt.Errorf("heartbeats: %w", err)
		}
		f.Meta = &data.FrameMeta{Type: data.FrameTypeTimeSeriesWide, TypeVersion: data.FrameTypeVersion{0, 1}}
		f.Meta.ExecutedQueryString = executed(st)
		f.Meta.Notices = limitNotices(st, rows, "heartbeats")
		return data.Frames{f}, nil
	}
	return nil, &queryError{backend.StatusBadRequest, fmt.Sprintf("agent view %q is not table or heartbeats", q.AgentView)}
}

// toWide turns a long time series frame (time, text dimensions, numbers)
// into a wide one, the dimensions becoming labels. An empty frame keeps its
// time and number fields, as the SDK cannot convert it.
func toWide(long *data.Frame) (*data.Frame, error) {
	if n, _ := long.RowLen(); n == 0 {
		wide := data.NewFrame(long.Name)
		for _, f := range long.Fields {
			if f.Type() != data.FieldTypeNullableString {
				wide.Fields = append(wide.Fields, f)
			}
		}
		return wide, nil
	}
	wide, err := data.LongToWide(long, &data.FillMissing{Mode: data.FillModeNull})
	if err != nil {
		return nil, fmt.Errorf("to wide frame: %w", err)
	}
	wide.Name = long.Name
	return wide, nil
}

// value is the concrete value of the named field at row i: nil for NULL or
// a missing field.
func value(f *data.Frame, name string, i int) any {
	fld, _ := f.FieldByName(name)
	if fld == nil {
		return nil
	}
	v, ok := fld.ConcreteAt(i)
	if !ok {
		return nil
	}
	return v
}

func str(f *data.Frame, name string, i int) string {
	s, _ := value(f, name, i).(string)
	return s
}

func floatOf(v any) float64 {
	x, _ := v.(float64)
	return x
}

func floatPtr(v any) *float64 {
	if x, ok := v.(float64); ok {
		return &x
	}
	return nil
}
