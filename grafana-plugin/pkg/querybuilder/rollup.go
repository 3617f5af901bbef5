package querybuilder

import (
	"strings"
	"time"

	"github.com/orbweaver/orbweaver/internal/durhist"
)

// Rollups. Migration 0011 keeps http_calls_1m: per minute, agent and server
// ip:port, the calls, errors, bytes and a duration histogram of every
// stored call; migration 0013 keeps http_edges_1m and http_edges_10m, the
// same per minute or 10 minutes, agent, client ip and server ip:port, of
// the calls that have both addresses (see docs/schema.md). A statistics or service map query reads
// them instead of the calls when it is covered:
//
//   - its filters are on the rollup's dimensions only (agent, server IP,
//     port, server ip:port) and it groups by them only (server, agent);
//   - its buckets are whole minutes (stats);
//   - its range holds at least one whole minute.
//
// The whole minutes of the range come from the rollup; the calls of the
// partial minutes at its ends from http_calls, so counts, rates, errors and
// bytes are exactly those of the calls. Percentiles are estimated from the
// duration histograms, within durhist.MaxRelativeError of percentile_cont:
// the statement returns them as NULL next to a histogram column, and the
// caller fills them with Statement.FinishPercentiles.

// RollupInterval is the rollups' bucket: stats intervals that are a
// multiple of it can use them.
const RollupInterval = time.Minute

// PercentileRelativeError bounds the relative error of percentiles
// computed from rollups.
const PercentileRelativeError = durhist.MaxRelativeError

// HistogramColumn is the column of duration histograms a statement returns
// when the caller computes its percentiles.
const HistogramColumn = "duration_histogram"

// Percentile is a result column to compute from the histogram column.
type Percentile struct {
	Column string
	P      float64
}

// durationBounds is the array of the histogram buckets' lower bounds, as
// width_bucket takes it (evaluated once per statement).
const durationBounds = "(SELECT array_agg(lower_us ORDER BY bucket) FROM http_duration_buckets WHERE bucket > 0)"

// callHistogram is the duration histogram of one call (an http_calls row):
// one entry, or none without a duration.
const callHistogram = "CASE WHEN duration_us IS NULL THEN '{}'::integer[] ELSE ARRAY[(width_bucket(duration_us, " + durationBounds + ") << 21) | 1] END"

// rollupCovered tells whether the rollup has every dimension f filters on.
func rollupCovered(f Filters) bool {
	g := f
	g.AgentID, g.ServerIP, g.ServerPort, g.Server = nil, nil, 0, nil
	return isZeroFilters(g)
}

func isZeroFilters(f Filters) bool {
	return len(f.AgentID) == 0 && len(f.ClientIP) == 0 && f.ClientPort == 0 && len(f.ServerIP) == 0 && f.ServerPort == 0 &&
		len(f.Server) == 0 && len(f.ServerName) == 0 && len(f.Method) == 0 && f.PathPrefix == "" && f.PathRegex == "" &&
		f.Search == "" && len(f.Status) == 0 && len(f.StatusClass) == 0 && f.MinDurationMs == nil && f.MaxDurationMs == nil &&
		len(f.Identification) == 0 && len(f.Origin) == 0 && len(f.Template) == 0 && f.TemplatePrefix == "" &&
		f.TemplateRegex == "" && len(f.TokenProblem) == 0 && f.MultipleCredentials == nil
}

// rollupDimension tells whether the rollup has a group-by dimension.
func rollupDimension(name string) bool { return name == "server" || name == "agent" }

// wholeMinutes returns the whole minutes [lo, hi) of tr; ok is false when
// there is none.
func wholeMinutes(tr TimeRange) (lo, hi time.Time, ok bool) {
	lo = tr.From.Truncate(RollupInterval)
	if lo.Before(tr.From) {
		lo = lo.Add(RollupInterval)
	}
	hi = tr.To.Truncate(RollupInterval)
	return lo, hi, lo.Before(hi)
}

// rollupSource is a rollup table and the spans [from, to) of buckets to
// read from it.
type rollupSource struct {
	table string
	spans [][2]time.Time
}

// callsRollup reads the whole minutes [lo, hi) from http_calls_1m.
func callsRollup(lo, hi time.Time) []rollupSource {
	return []rollupSource{{"http_calls_1m", [][2]time.Time{{lo, hi}}}}
}

// EdgesRollupInterval is the bucket of the edges' coarse tier
// (http_edges_10m).
const EdgesRollupInterval = 10 * time.Minute

// edgesRollup reads the whole minutes [lo, hi): the whole 10-minute spans
// among them from http_edges_10m, the minutes around from http_edges_1m,
// and all of them from http_edges_1m_pending (the edges of the last
// seconds' transactions, not folded into either tier yet).
func edgesRollup(lo, hi time.Time) []rollupSource {
	lo10 := lo.Truncate(EdgesRollupInterval)
	if lo10.Before(lo) {
		lo10 = lo10.Add(EdgesRollupInterval)
	}
	hi10 := hi.Truncate(EdgesRollupInterval)
	pending := rollupSource{"http_edges_1m_pending", [][2]time.Time{{lo, hi}}}
	if !lo10.Before(hi10) {
		return []rollupSource{{"http_edges_1m", [][2]time.Time{{lo, hi}}}, pending}
	}
	var minutes [][2]time.Time
	if lo.Before(lo10) {
		minutes = append(minutes, [2]time.Time{lo, lo10})
	}
	if hi10.Before(hi) {
		minutes = append(minutes, [2]time.Time{hi10, hi})
	}
	sources := []rollupSource{{"http_edges_10m", [][2]time.Time{{lo10, hi10}}}}
	if len(minutes) > 0 {
		sources = append(sources, rollupSource{"http_edges_1m", minutes})
	}
	return append(sources, pending)
}

// rollupCalls returns the body of a CTE with the columns time, calls,
// errors, bytes, duration_histogram and the given extra expressions (over
// columns that every table has): the rows of sources, which cover the
// whole minutes [lo, hi) of tr, and the calls of the rest of tr, all
// matching f (covered by the rollup). extra holds "expression AS name"
// items.
func (p *params) rollupCalls(sources []rollupSource, f Filters, tr TimeRange, lo, hi time.Time, extra []string) (string, error) {
	from, to, whole0, whole1 := p.arg(tr.From), p.arg(tr.To), p.arg(lo), p.arg(hi)
	placeholders := map[time.Time]string{lo: whole0, hi: whole1}
	at := func(t time.Time) string { // a span's bound
		if ph, ok := placeholders[t]; ok {
			return ph
		}
		placeholders[t] = p.arg(t)
		return placeholders[t]
	}
	conds, err := p.filters(f)
	if err != nil {
		return "", err
	}
	more := ""
	for _, e := range extra {
		more += ",\n    " + e
	}
	var rolled strings.Builder
	for _, src := range sources {
		var spans []string
		for _, sp := range src.spans {
			spans = append(spans, "bucket >= "+at(sp[0])+" AND bucket < "+at(sp[1]))
		}
		where := append([]string{"((" + strings.Join(spans, ") OR (") + "))"}, conds...)
		if len(spans) == 1 {
			where = append(strings.Split(spans[0], " AND "), conds...)
		}
		rolled.WriteString(`  SELECT bucket AS time, calls, errors, bytes, duration_histogram` + more + `
  FROM ` + src.table + `
  WHERE ` + and(where, "    ") + `
  UNION ALL
`)
	}
	rawConds := append([]string{"((time >= " + from + " AND time < " + whole0 + ") OR (time >= " + whole1 + " AND time < " + to + "))"}, conds...)
	return rolled.String() + `  SELECT time, 1, ` + isError + `::int, ` + totalBytes + `,
    ` + callHistogram + more + `
  FROM http_calls
  WHERE ` + and(rawConds, "    "), nil
}

// FinishPercentiles computes the percentile columns of one result row from
// its histogram column (the HistogramColumn value, as []int32): the values
// for st.Percentiles, in order, nil where the histogram is empty (SQL
// NULL).
func (st Statement) FinishPercentiles(histogram []int32) []*float64 {
	ps := make([]float64, len(st.Percentiles))
	for i, p := range st.Percentiles {
		ps[i] = p.P
	}
	out := make([]*float64, len(ps))
	v, ok := durhist.Percentiles(histogram, ps)
	if !ok {
		return out
	}
	for i := range v {
		out[i] = &v[i]
	}
	return out
}
