package querybuilder

// ServiceMapEdges selects the caller→callee edges between IP addresses of
// the calls matching q in tr, the busiest first, at most the limit. Columns:
// source, target (text), calls, errors (bigint), p95_ms (float8).
//
// Queries the rollups cover read the edges' rollups (edgesRollup) for the
// whole minutes of tr and the calls for the rest (see rollup.go); others
// count the calls, in one pass. Either way the p95 comes from a duration
// histogram per edge, computed by the caller (Statement.Percentiles)
// within PercentileRelativeError, as the nodes'; with q.Exact,
// percentile_cont of the selected edges' calls (a second pass).
func ServiceMapEdges(q Query, tr TimeRange) (Statement, error) {
	if err := tr.validate(); err != nil {
		return Statement{}, err
	}
	var p params
	limit, capped := clamp(q.Limit, DefaultServiceMapEdges, MaxServiceMapEdges)
	percentiles := []Percentile{{Column: "p95_ms", P: 0.95}}
	if lo, hi, ok := wholeMinutes(tr); ok && !q.Exact && rollupCovered(q.Filters) {
		calls, err := p.rollupCalls(edgesRollup(lo, hi), q.Filters, tr, lo, hi, []string{"client_ip", "server_ip"})
		if err != nil {
			return Statement{}, err
		}
		sql := `WITH rolled AS (
` + calls + `
)
` + busiestEdges("sum(calls)::bigint", "sum(errors)::bigint", "duration_histogram", "rolled",
			"client_ip IS NOT NULL AND server_ip IS NOT NULL") + p.arg(int64(limit))
		return Statement{SQL: sql, Args: p.args, Limit: limit, Capped: capped, Percentiles: percentiles}, nil
	}
	conds, err := p.where(q.Filters, tr)
	if err != nil {
		return Statement{}, err
	}
	conds = append(conds, "client_ip IS NOT NULL", "server_ip IS NOT NULL")
	if !q.Exact {
		sql := busiestEdges("count(*)", "count(*) FILTER (WHERE "+isError+")", callHistogram, "http_calls",
			and(conds, "  ")) + p.arg(int64(limit))
		return Statement{SQL: sql, Args: p.args, Limit: limit, Capped: capped, Percentiles: percentiles}, nil
	}
	sql := `WITH calls AS MATERIALIZED (
  SELECT client_ip, server_ip, ` + isError + ` AS error, duration_us
  FROM http_calls
  WHERE ` + and(conds, "    ") + `
), edges AS (
  SELECT client_ip, server_ip, count(*) AS calls, count(*) FILTER (WHERE error) AS errors
  FROM calls
  GROUP BY client_ip, server_ip
  ORDER BY calls DESC, host(client_ip), host(server_ip)
  LIMIT ` + p.arg(int64(limit)) + `
)
SELECT host(e.client_ip) AS source,
  host(e.server_ip) AS target,
  e.calls,
  e.errors,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY c.` + durationMs + `) AS p95_ms
FROM edges e
JOIN calls c ON c.client_ip = e.client_ip AND c.server_ip = e.server_ip
GROUP BY e.client_ip, e.server_ip, e.calls, e.errors
ORDER BY e.calls DESC, source, target`
	return Statement{SQL: sql, Args: p.args, Limit: limit, Capped: capped}, nil
}

// ServiceMapNodes selects, for each of the given IP addresses, the calls it
// served among those matching q in tr. Columns: id (text), calls, errors
// (bigint), p95_ms (float8). Addresses that served nothing have no row.
// Queries the rollups cover read them (see rollup.go).
func ServiceMapNodes(q Query, tr TimeRange, ips []string) (Statement, error) {
	if err := tr.validate(); err != nil {
		return Statement{}, err
	}
	var p params
	if lo, hi, ok := wholeMinutes(tr); ok && !q.Exact && rollupCovered(q.Filters) {
		calls, err := p.rollupCalls(callsRollup(lo, hi), q.Filters, tr, lo, hi, []string{"server_ip"})
		if err != nil {
			return Statement{}, err
		}
		sql := `WITH rolled AS (
` + calls + `
)
SELECT host(server_ip) AS id,
  sum(calls)::bigint AS calls,
  sum(errors)::bigint AS errors,
  NULL::float8 AS p95_ms,
  http_histogram_concat(duration_histogram) AS ` + HistogramColumn + `
FROM rolled
WHERE server_ip = ANY (` + p.arg(ips) + `::inet[])
GROUP BY server_ip
ORDER BY id`
		return Statement{SQL: sql, Args: p.args, Limit: len(ips), Percentiles: []Percentile{{Column: "p95_ms", P: 0.95}}}, nil
	}
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

// busiestEdges returns the statement, up to its LIMIT value, that selects
// the edges of the rows of from matching where, the busiest first: calls
// and errors are the aggregates counting them, histogram the expression of
// a row's duration histogram.
func busiestEdges(calls, errors, histogram, from, where string) string {
	return `SELECT host(client_ip) AS source,
  host(server_ip) AS target,
  ` + calls + ` AS calls,
  ` + errors + ` AS errors,
  NULL::float8 AS p95_ms,
  http_histogram_concat(` + histogram + `) AS ` + HistogramColumn + `
FROM ` + from + `
WHERE ` + where + `
GROUP BY client_ip, server_ip
ORDER BY calls DESC, source, target
LIMIT `
}
