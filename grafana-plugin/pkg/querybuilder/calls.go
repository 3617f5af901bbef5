package querybuilder

import "strconv"

// callColumns is the select list of one call, shared by the calls and
// concurrent calls queries. Addresses and ids are text, durations are
// milliseconds.
const callColumns = `id,
  time,
  agent_id::text AS agent_id,
  host(client_ip) AS client_ip,
  client_port,
  host(server_ip) AS server_ip,
  server_port,
  method,
  host,
  path,
  query,
  status,
  (` + durationMs + `)::float8 AS duration_ms,
  request_body_size,
  response_body_size,
  parse_status,
  x_request_id,
  traceparent`

// callSorts maps Query.Sort to an ORDER BY clause; id breaks ties so the
// order is total.
func callSort(sort string) (string, bool) {
	switch sort {
	case "", "time_desc":
		return "time DESC, id DESC", true
	case "time_asc":
		return "time, id", true
	case "duration_desc":
		return "duration_us DESC NULLS LAST, id DESC", true
	case "duration_asc":
		return "duration_us NULLS LAST, id", true
	}
	return "", false
}

// Calls selects the calls matching q in tr, sorted, at most the limit.
func Calls(q Query, tr TimeRange) (Statement, error) {
	if err := tr.validate(); err != nil {
		return Statement{}, err
	}
	switch q.Format {
	case "", "table", "logs":
	default:
		return Statement{}, invalid("format %q is not table or logs", q.Format)
	}
	order, ok := callSort(q.Sort)
	if !ok {
		return Statement{}, invalid("sort %q is not one of time_desc, time_asc, duration_desc, duration_asc", q.Sort)
	}
	var p params
	conds, err := p.where(q.Filters, tr)
	if err != nil {
		return Statement{}, err
	}
	limit, capped := clamp(q.Limit, DefaultCallsLimit, MaxCallsLimit)
	sql := "SELECT " + callColumns + "\nFROM http_calls\nWHERE " + and(conds, "  ") +
		"\nORDER BY " + order + "\nLIMIT " + p.arg(int64(limit))
	return Statement{SQL: sql, Args: p.args, Limit: limit, Capped: capped}, nil
}

// parseCallID reads the id of a call tree or concurrent calls query.
func parseCallID(s string) (int64, error) {
	if s == "" {
		return 0, invalid("a call id is required")
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, invalid("call id %q is not a positive integer", s)
	}
	return id, nil
}

// Concurrent selects the calls to the same server ip:port as call q.CallID
// whose time span overlaps it, the call itself excluded, by start time.
// Both the call and the others must start in tr.
func Concurrent(q Query, tr TimeRange) (Statement, error) {
	if err := tr.validate(); err != nil {
		return Statement{}, err
	}
	id, err := parseCallID(q.CallID)
	if err != nil {
		return Statement{}, err
	}
	var p params
	from, to := p.arg(tr.From), p.arg(tr.To)
	limit, capped := clamp(q.Limit, DefaultCallsLimit, MaxCallsLimit)
	sql := `WITH target AS (
  SELECT id AS target_id, server_ip AS target_ip, server_port AS target_port,
    ` + callStart + ` AS target_start, ` + callEnd + ` AS target_end
  FROM http_calls
  WHERE id = ` + p.arg(id) + ` AND time >= ` + from + ` AND time < ` + to + `
  LIMIT 1
)
SELECT ` + callColumns + `
FROM http_calls
JOIN target ON server_ip = target_ip AND server_port = target_port
WHERE time >= ` + from + `
  AND time < ` + to + `
  AND id <> target_id
  AND ` + callStart + ` < target_end
  AND ` + callEnd + ` > target_start
ORDER BY ` + callStart + `, id
LIMIT ` + p.arg(int64(limit))
	return Statement{SQL: sql, Args: p.args, Limit: limit, Capped: capped}, nil
}
