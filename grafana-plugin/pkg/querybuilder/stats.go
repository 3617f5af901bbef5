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

// rollupMetricExpr is the aggregate of a metric over the rows of the
// rollup CTE (rollupCalls); percentiles are NULL, computed by the caller.
func rollupMetricExpr(name, seconds string) (expr string, p float64) {
	switch name {
	case "rate":
		return "sum(calls)::float8 / " + seconds, 0
	case "error_rate":
		return "sum(errors)::float8 / sum(calls)", 0
	case "bytes":
		return "sum(bytes)::float8", 0
	}
	return "NULL::float8", map[string]float64{"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}[name]
}

// Stats computes q.Metrics per interval-wide time bucket of tr, grouped by
// q.GroupBy, keeping the q.TopN groups with the most calls. The result has
// a time column, one text column per dimension (named after it) and one
// float8 column per metric, ordered by time then dimensions.
//
// Queries the rollups cover (see rollup.go) read them; their percentiles
// are then estimates the caller computes (Statement.Percentiles).
func Stats(q Query, tr TimeRange, interval time.Duration, d Dialect) (Statement, error) {
	if err := tr.validate(); err != nil {
		return Statement{}, err
	}
	interval = max(interval, MinInterval)
	metrics := q.Metrics
	if len(metrics) == 0 {
		metrics = []string{"rate"}
	}
	for _, m := range metrics {
		if _, _, ok := metricExpr(m, ""); !ok {
			return Statement{}, invalid("metric %q is not one of %s", m, strings.Join(Metrics(), ", "))
		}
	}
	var dims []string
	covered := !q.Exact && interval%RollupInterval == 0 && rollupCovered(q.Filters)
	for _, g := range q.GroupBy {
		if _, ok := dimensionExpr(g); !ok {
			return Statement{}, invalid("group by %q is not one of %s", g, strings.Join(Dimensions(), ", "))
		}
		if !slices.Contains(dims, g) {
			dims = append(dims, g)
			covered = covered && rollupDimension(g)
		}
	}
	lo, hi, whole := wholeMinutes(tr)
	if covered && whole {
		return statsFromRollups(q, tr, lo, hi, interval, d, metrics, dims)
	}
	var p params
	conds, err := p.where(q.Filters, tr)
	if err != nil {
		return Statement{}, err
	}
	seconds := p.arg(interval.Seconds()) + "::float8"
	var sel []string
	for _, m := range metrics {
		expr, col, _ := metricExpr(m, seconds)
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
	var dimSel []string
	for _, g := range dims {
		expr, _ := dimensionExpr(g)
		dimSel = append(dimSel, expr+" AS d_"+g)
	}
	b.WriteString("WITH calls AS (\n  SELECT time, status, duration_us, request_header_size, request_body_size, response_header_size, response_body_size,\n    ")
	b.WriteString(strings.Join(dimSel, ",\n    "))
	b.WriteString("\n  FROM http_calls\n  WHERE " + and(conds, "    ") + "\n)")
	writeTopSeries(&b, &p, d, seconds, "calls", dims, sel, "count(*)", topN, limit)
	return Statement{SQL: b.String(), Args: p.args, Limit: limit, Capped: capped}, nil
}

// writeTopSeries writes, after a CTE named cte with one d_<name> column
// per dimension, the CTE of the topN groups with the most calls (weight
// counts them) and the select of the metrics sel of those groups per time
// bucket.
func writeTopSeries(b *strings.Builder, p *params, d Dialect, seconds, cte string, dims, sel []string, weight string, topN, limit int) {
	// In the CTEs a dimension is d_<name>, so it cannot clash with the
	// columns the metrics read (status…); the result names it <name>.
	// Dimensions may be NULL: the join compares them with a hashable
	// condition that treats NULLs as equal.
	var dimCols, dimOut, dimRef, join []string
	for _, g := range dims {
		dimCols = append(dimCols, "d_"+g)
		dimOut = append(dimOut, "c.d_"+g+" AS "+g)
		dimRef = append(dimRef, "c.d_"+g)
		join = append(join, "coalesce(c.d_"+g+", '') = coalesce(t.d_"+g+", '') AND (c.d_"+g+" IS NULL) = (t.d_"+g+" IS NULL)")
	}
	b.WriteString(", top AS (\n")
	b.WriteString("  SELECT " + strings.Join(dimCols, ", ") + "\n  FROM " + cte + "\n  GROUP BY " + strings.Join(dimCols, ", "))
	b.WriteString("\n  ORDER BY " + weight + " DESC, " + strings.Join(dimCols, ", ") + "\n  LIMIT " + p.arg(int64(topN)) + "\n)\n")
	b.WriteString("SELECT " + bucketExpr(d, seconds) + " AS time,\n  " + strings.Join(dimOut, ", ") + ",\n  " + strings.Join(sel, ",\n  "))
	b.WriteString("\nFROM " + cte + " c\nJOIN top t ON " + strings.Join(join, "\n  AND "))
	b.WriteString("\nGROUP BY 1, " + strings.Join(dimRef, ", ") + "\nORDER BY 1, " + strings.Join(dimRef, ", "))
	b.WriteString("\nLIMIT " + p.arg(int64(limit)))
}

// statsFromRollups is Stats for a query the rollups cover: the whole
// minutes [lo, hi) of tr from http_calls_1m, the rest from http_calls.
func statsFromRollups(q Query, tr TimeRange, lo, hi time.Time, interval time.Duration, d Dialect, metrics, dims []string) (Statement, error) {
	var p params
	var dimSel []string
	for _, g := range dims {
		expr, _ := dimensionExpr(g)
		dimSel = append(dimSel, expr+" AS d_"+g)
	}
	calls, err := p.rollupCalls(callsRollup(lo, hi), q.Filters, tr, lo, hi, dimSel)
	if err != nil {
		return Statement{}, err
	}
	seconds := p.arg(interval.Seconds()) + "::float8"
	var sel []string
	var percentiles []Percentile
	for _, m := range metrics {
		_, col, _ := metricExpr(m, seconds)
		expr, pc := rollupMetricExpr(m, seconds)
		if pc > 0 {
			percentiles = append(percentiles, Percentile{Column: col, P: pc})
		}
		sel = append(sel, expr+" AS "+col)
	}
	if len(percentiles) > 0 {
		sel = append(sel, "http_histogram_concat(duration_histogram) AS "+HistogramColumn)
	}
	limit, capped := clamp(q.Limit, DefaultStatsLimit, MaxStatsLimit)
	var b strings.Builder
	b.WriteString("WITH rolled AS (\n" + calls + "\n)")
	if len(dims) == 0 {
		b.WriteString("\nSELECT " + bucketExpr(d, seconds) + " AS time,\n  " + strings.Join(sel, ",\n  "))
		b.WriteString("\nFROM rolled\nGROUP BY 1\nORDER BY 1\nLIMIT " + p.arg(int64(limit)))
	} else {
		topN, _ := clamp(q.TopN, DefaultTopN, MaxTopN)
		writeTopSeries(&b, &p, d, seconds, "rolled", dims, sel, "sum(calls)", topN, limit)
	}
	return Statement{SQL: b.String(), Args: p.args, Limit: limit, Capped: capped, Percentiles: percentiles}, nil
}
