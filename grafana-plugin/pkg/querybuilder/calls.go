package querybuilder

import (
	"strconv"
	"time"
)

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
  traceparent,
  identification,
  host(origin) AS origin,
  template,
  token_not_yet_valid,
  token_expired,
  credentials_count,
  multiple_credentials`

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

// Live tail bounds.
const (
	// MaxTailRows bounds the calls one poll of a live tail reads.
	MaxTailRows = 500
	// TailLookback is how far back in call start time a live tail looks:
	// calls stored later than this after they started are not tailed. It
	// keeps every poll on the newest partitions.
	TailLookback = 10 * time.Minute
)

// TailCursor selects the id of the newest call started at or after since
// (0 when there is none): a live tail sends the calls stored after it.
func TailCursor(since time.Time) Statement {
	var p params
	sql := "SELECT coalesce(max(id), 0)::int8 AS cursor\nFROM http_calls\nWHERE time >= " + p.arg(since)
	return Statement{SQL: sql, Args: p.args, Limit: 1}
}

// Tail selects the calls matching q's filters that started at or after
// since and were stored after call afterID, in id (storage) order, at most
// MaxTailRows. q's format must be table or logs; its sort and limit do not
// apply (a tail follows arrival order).
func Tail(q Query, since time.Time, afterID int64) (Statement, error) {
	switch q.Format {
	case "", "table", "logs":
	default:
		return Statement{}, invalid("format %q is not table or logs", q.Format)
	}
	if afterID < 0 {
		return Statement{}, invalid("tail cursor %d is negative", afterID)
	}
	var p params
	conds := []string{"time >= " + p.arg(since), "id > " + p.arg(afterID)}
	more, err := p.filters(q.Filters)
	if err != nil {
		return Statement{}, err
	}
	conds = append(conds, more...)
	sql := "SELECT " + callColumns + "\nFROM http_calls\nWHERE " + and(conds, "  ") +
		"\nORDER BY id\nLIMIT " + p.arg(int64(MaxTailRows))
	return Statement{SQL: sql, Args: p.args, Limit: MaxTailRows}, nil
}
