package querybuilder

import (
	"slices"
	"strings"
	"time"
)

// MinInterval is the narrowest stats bucket.
const MinInterval = time.Second

// bucketExpr is the start of the interval-wide bucket of time; seconds is
// the placeholder of the width. Both forms align buckets on the same origin.
func bucketExpr(d Dialect, seconds string) string {
	if d == TimescaleDB {
		return "time_bucket(make_interval(secs => " + seconds + "), time)"
	}
	return "date_bin(make_interval(secs => " + seconds + "), time, TIMESTAMPTZ '2000-01-03 00:00:00+00')"
}

// Stats computes q.Metrics per interval-wide time bucket of tr, grouped by
// q.GroupBy, keeping the q.TopN groups with the most calls. The result has
// a time column, one text column per dimension (named after it) and one
// float8 column per metric, ordered by time then dimensions.
func Stats(q Query, tr TimeRange, interval time.Duration, d Dialect) (Statement, error) {
	if err := tr.validate(); err != nil {
		return Statement{}, err
	}
	interval = max(interval, MinInterval)
	metrics := q.Metrics
	if len(metrics) == 0 {
		metrics = []string{"rate"}
	}
	var dims []string
	for _, g := range q.GroupBy {
		if _, ok := dimensionExpr(g); !ok {
			return Statement{}, invalid("group by %q is not one of %s", g, strings.Join(Dimensions(), ", "))
		}
		if !slices.Contains(dims, g) {
			dims = append(dims, g)
		}
	}
	var p params
	conds, err := p.where(q.Filters, tr)
	if err != nil {
		return Statement{}, err
	}
	seconds := p.arg(interval.Seconds()) + "::float8"
	var sel []string
	for _, m := range metrics {
		expr, col, ok := metricExpr(m, seconds)
		if !ok {
			return Statement{}, invalid("metric %q is not one of %s", m, strings.Join(Metrics(), ", "))
		}
		sel = append(sel, expr+" AS "+col)
	}
	limit, capped := clamp(q.Limit, DefaultStatsLimit, MaxStatsLimit)

	var b strings.Builder
	if len(dims) == 0 {
		b.WriteString("SELECT " + bucketExpr(d, seconds) + " AS time,\n  " + strings.Join(sel, ",\n  "))
		b.WriteString("\nFROM http_calls\nWHERE " + and(conds, "  "))
		b.WriteString("\nGROUP BY 1\nORDER BY 1\nLIMIT " + p.arg(int64(limit)))
		return Statement{SQL: b.String(), Args: p.args, Limit: limit, Capped: capped}, nil
	}
	topN, _ := clamp(q.TopN, DefaultTopN, MaxTopN)
	// In the CTEs a dimension is d_<name>, so it cannot clash with the
	// columns the metrics read (status…); the result names it <name>.
	var dimSel, dimCols, dimOut, dimRef, join []string
	for _, g := range dims {
		expr, _ := dimensionExpr(g)
		dimSel = append(dimSel, expr+" AS d_"+g)
		dimCols = append(dimCols, "d_"+g)
		dimOut = append(dimOut, "c.d_"+g+" AS "+g)
		dimRef = append(dimRef, "c.d_"+g)
		join = append(join, "c.d_"+g+" IS NOT DISTINCT FROM t.d_"+g)
	}
	b.WriteString("WITH calls AS (\n  SELECT time, status, duration_us, request_header_size, request_body_size, response_header_size, response_body_size,\n    ")
	b.WriteString(strings.Join(dimSel, ",\n    "))
	b.WriteString("\n  FROM http_calls\n  WHERE " + and(conds, "    ") + "\n), top AS (\n")
	b.WriteString("  SELECT " + strings.Join(dimCols, ", ") + "\n  FROM calls\n  GROUP BY " + strings.Join(dimCols, ", "))
	b.WriteString("\n  ORDER BY count(*) DESC, " + strings.Join(dimCols, ", ") + "\n  LIMIT " + p.arg(int64(topN)) + "\n)\n")
	b.WriteString("SELECT " + bucketExpr(d, seconds) + " AS time,\n  " + strings.Join(dimOut, ", ") + ",\n  " + strings.Join(sel, ",\n  "))
	b.WriteString("\nFROM calls c\nJOIN top t ON " + strings.Join(join, " AND "))
	b.WriteString("\nGROUP BY 1, " + strings.Join(dimRef, ", ") + "\nORDER BY 1, " + strings.Join(dimRef, ", "))
	b.WriteString("\nLIMIT " + p.arg(int64(limit)))
	return Statement{SQL: b.String(), Args: p.args, Limit: limit, Capped: capped}, nil
}
