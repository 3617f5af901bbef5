package querybuilder

import "strings"

// CallTree selects call q.CallID (or, given q.TraceID instead, the first
// call in tr whose traceparent carries that trace id) and, recursively up to q.MaxDepth levels,
// the calls its callee made while serving it: calls starting in tr whose
// client IP is the parent's server IP and whose time span lies inside the
// parent's (a call that ends before it starts, from clock steps, is never
// a child). A call that fits several parents is attached to the deepest,
// then latest starting one. Columns: id, parent_id (NULL for the root),
// depth, then the call (client/server, method, host, path, status,
// start_ms/duration_ms as epoch milliseconds, sizes, parse_status,
// traceparent, identification, template, token flags), ordered by start.
func CallTree(q Query, tr TimeRange) (Statement, error) {
	if err := tr.validate(); err != nil {
		return Statement{}, err
	}
	if q.CallID == "" && q.TraceID == "" {
		return Statement{}, invalid("a call id or a trace id is required")
	}
	depth, _ := clamp(q.MaxDepth, DefaultTreeDepth, MaxTreeDepth)
	limit, capped := clamp(q.Limit, DefaultTreeSpans, MaxTreeSpans)
	var p params
	from, to := p.arg(tr.From), p.arg(tr.To)
	var root string
	if q.CallID != "" {
		id, err := parseCallID(q.CallID)
		if err != nil {
			return Statement{}, err
		}
		root = "id = " + p.arg(id)
	} else {
		traceID := strings.ToLower(q.TraceID)
		if !isTraceID(traceID) {
			return Statement{}, invalid("trace id %q is not 32 hexadecimal digits", q.TraceID)
		}
		root = "split_part(traceparent, '-', 2) = " + p.arg(traceID)
	}
	// Each level carries the columns of its calls, so that the result
	// needs no second lookup. A call's span starts at its time (time is
	// the request start when there is one), so the children of a call are
	// found with the time index within the parent's span.
	const cols = `client_ip, client_port, server_ip, server_port, method, host, path, status, request_body_size,
    response_body_size, parse_status, traceparent, identification, template, token_not_yet_valid, token_expired`
	sql := `WITH RECURSIVE tree AS (
  (SELECT id, NULL::bigint AS parent_id, 0 AS depth, ` + callStart + ` AS span_start, ` + callEnd + ` AS span_end,
    ` + cols + `
  FROM http_calls
  WHERE ` + root + ` AND time >= ` + from + ` AND time < ` + to + `
  ORDER BY time, id
  LIMIT 1)
  UNION ALL
  SELECT c.id, t.id, t.depth + 1, coalesce(c.request_start, c.time), coalesce(c.response_end, c.response_start, c.request_end, c.request_start, c.time),
    c.client_ip, c.client_port, c.server_ip, c.server_port, c.method, c.host, c.path, c.status, c.request_body_size,
    c.response_body_size, c.parse_status, c.traceparent, c.identification, c.template, c.token_not_yet_valid, c.token_expired
  FROM tree t
  JOIN http_calls c ON c.client_ip = t.server_ip
    AND c.time >= ` + from + ` AND c.time < ` + to + `
    AND c.time >= t.span_start AND c.time <= t.span_end
    AND c.id <> t.id
    AND coalesce(c.request_start, c.time) >= t.span_start
    AND coalesce(c.response_end, c.response_start, c.request_end, c.request_start, c.time) <= t.span_end
  WHERE t.depth < ` + p.arg(int32(depth)) + `
), spans AS (
  SELECT DISTINCT ON (id) *
  FROM tree
  ORDER BY id, depth DESC, span_start DESC
)
SELECT id,
  parent_id,
  depth,
  host(client_ip) AS client_ip,
  client_port,
  host(server_ip) AS server_ip,
  server_port,
  method,
  host,
  path,
  status,
  extract(epoch FROM span_start)::float8 * 1000 AS start_ms,
  extract(epoch FROM span_end - span_start)::float8 * 1000 AS duration_ms,
  request_body_size,
  response_body_size,
  parse_status,
  traceparent,
  identification,
  template,
  token_not_yet_valid,
  token_expired
FROM spans
ORDER BY span_start, id
LIMIT ` + p.arg(int64(limit))
	return Statement{SQL: sql, Args: p.args, Limit: limit, Capped: capped}, nil
}

// isTraceID tells whether s is a W3C trace id: 32 lower-case hex digits.
func isTraceID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
