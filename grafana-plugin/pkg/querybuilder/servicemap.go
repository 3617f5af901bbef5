package querybuilder

// ServiceMapEdges selects the caller→callee edges between IP addresses of
// the calls matching q in tr, the busiest first, at most the limit. Columns:
// source, target (text), calls, errors (bigint), p95_ms (float8).
func ServiceMapEdges(q Query, tr TimeRange) (Statement, error) {
	if err := tr.validate(); err != nil {
		return Statement{}, err
	}
	var p params
	conds, err := p.where(q.Filters, tr)
	if err != nil {
		return Statement{}, err
	}
	conds = append(conds, "client_ip IS NOT NULL", "server_ip IS NOT NULL")
	limit, capped := clamp(q.Limit, DefaultServiceMapEdges, MaxServiceMapEdges)
	sql := `SELECT host(client_ip) AS source,
  host(server_ip) AS target,
  count(*) AS calls,
  count(*) FILTER (WHERE ` + isError + `) AS errors,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY ` + durationMs + `) AS p95_ms
FROM http_calls
WHERE ` + and(conds, "  ") + `
GROUP BY client_ip, server_ip
ORDER BY calls DESC, source, target
LIMIT ` + p.arg(int64(limit))
	return Statement{SQL: sql, Args: p.args, Limit: limit, Capped: capped}, nil
}

// ServiceMapNodes selects, for each of the given IP addresses, the calls it
// served among those matching q in tr. Columns: id (text), calls, errors
// (bigint), p95_ms (float8). Addresses that served nothing have no row.
func ServiceMapNodes(q Query, tr TimeRange, ips []string) (Statement, error) {
	if err := tr.validate(); err != nil {
		return Statement{}, err
	}
	var p params
	conds, err := p.where(q.Filters, tr)
	if err != nil {
		return Statement{}, err
	}
	conds = append(conds, "server_ip = ANY ("+p.arg(ips)+"::inet[])")
	sql := `SELECT host(server_ip) AS id,
  count(*) AS calls,
  count(*) FILTER (WHERE ` + isError + `) AS errors,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY ` + durationMs + `) AS p95_ms
FROM http_calls
WHERE ` + and(conds, "  ") + `
GROUP BY server_ip
ORDER BY id`
	return Statement{SQL: sql, Args: p.args, Limit: len(ips)}, nil
}
