package querybuilder

import (
	"strings"
	"time"

	"github.com/orbweaver/orbweaver/internal/durhist"
)

// Rollups. Migration 0011 keeps http_calls_1m: per minute, agent and server
// ip:port, the calls, errors, bytes and a duration histogram of every
// stored call; migration 0013 keeps http_edges_1m, the same per minute,
// agent, client ip and server ip:port, of the calls that have both
// addresses (see docs/schema.md). A statistics or service map query reads
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

// The rollup tables rollupCalls reads: the edges are in http_edges_1m and,
// for the last seconds' transactions, in http_edges_1m_pending (several
// rows per key, added up like the rest).
var (
	callsRollup = []string{"http_calls_1m"}
	edgesRollup = []string{"http_edges_1m", "http_edges_1m_pending"}
)

// rollupCalls returns the body of a CTE with the columns time, calls,
// errors, bytes, duration_histogram and the given extra expressions (over
// columns that every table has): the rows of the rollup tables of the
// whole minutes [lo, hi) of tr and the calls of the rest of tr, all
// matching f (covered by the rollup). extra holds "expression AS name"
// items.
func (p *params) rollupCalls(tables []string, f Filters, tr TimeRange, lo, hi time.Time, extra []string) (string, error) {
	from, to, whole0, whole1 := p.arg(tr.From), p.arg(tr.To), p.arg(lo), p.arg(hi)
	conds, err := p.filters(f)
	if err != nil {
		return "", err
	}
	more := ""
	for _, e := range extra {
		more += ",\n    " + e
	}
	rollupConds := append([]string{"bucket >= " + whole0, "bucket < " + whole1}, conds...)
	rawConds := append([]string{"((time >= " + from + " AND time < " + whole0 + ") OR (time >= " + whole1 + " AND time < " + to + "))"}, conds...)
	var rolled strings.Builder
	for _, table := range tables {
		rolled.WriteString(`  SELECT bucket AS time, calls, errors, bytes, duration_histogram` + more + `
  FROM ` + table + `
  WHERE ` + and(rollupConds, "    ") + `
  UNION ALL
`)
	}
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
