package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/data"
	"github.com/jackc/pgx/v5/pgconn"

	qb "github.com/orbweaver/orbweaver/grafana-plugin/pkg/querybuilder"
)

// defaultMaxDataPoints sizes stats buckets when Grafana gives no interval.
const defaultMaxDataPoints = 1000

// QueryData answers each query on its own: one failing query gets an error
// response and does not fail the others.
func (d *Datasource) QueryData(ctx context.Context, req *backend.QueryDataRequest) (*backend.QueryDataResponse, error) {
	resp := backend.NewQueryDataResponse()
	for _, q := range req.Queries {
		resp.Responses[q.RefID] = d.query(ctx, q)
	}
	return resp, nil
}

// queryError is a per-query failure with the status Grafana shows.
type queryError struct {
	status backend.Status
	msg    string
}

func (e *queryError) Error() string { return e.msg }

// query runs one query and turns its failure into an error response.
func (d *Datasource) query(ctx context.Context, dq backend.DataQuery) backend.DataResponse {
	frames, err := d.run(ctx, dq)
	if err != nil {
		var qe *queryError
		switch {
		case errors.As(err, &qe):
		case errors.Is(err, qb.ErrInvalid):
			qe = &queryError{backend.StatusBadRequest, err.Error()}
		default:
			qe = d.databaseError(err)
		}
		return backend.ErrDataResponseWithSource(qe.status, backend.ErrorSourceFromHTTPStatus(int(qe.status)), qe.msg)
	}
	return backend.DataResponse{Frames: frames}
}

// databaseError classifies an error from PostgreSQL: errors caused by the
// query's values (a bad regular expression…) are the user's, the rest the
// datasource's.
func (d *Datasource) databaseError(err error) *queryError {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "22") || pgErr.Code == "2201B") { // data exception
		return &queryError{backend.StatusBadRequest, "invalid value: " + pgErr.Message}
	}
	return &queryError{backend.StatusInternal, d.explain(err)}
}

// run builds and runs the statements of one query.
func (d *Datasource) run(ctx context.Context, dq backend.DataQuery) (data.Frames, error) {
	if d.settingsErr != nil {
		return nil, &queryError{backend.StatusBadRequest, "datasource settings: " + d.settingsErr.Error()}
	}
	q, err := qb.Parse(dq.JSON)
	if err != nil {
		return nil, err
	}
	if dq.QueryType != "" {
		q.QueryType = dq.QueryType
	}
	tr := qb.TimeRange{From: dq.TimeRange.From, To: dq.TimeRange.To}
	switch q.QueryType {
	case "", qb.TypeCalls:
		return d.calls(ctx, q, tr)
	case qb.TypeStats:
		return d.stats(ctx, q, tr, interval(dq))
	case qb.TypeServiceMap:
		return d.serviceMap(ctx, q, tr)
	case qb.TypeCallTree:
		return d.callTree(ctx, q, tr)
	case qb.TypeConcurrent:
		return d.concurrent(ctx, q, tr)
	case qb.TypeAgents:
		return d.agents(ctx, q, tr)
	}
	return nil, &queryError{backend.StatusBadRequest, fmt.Sprintf("unknown query type %q", q.QueryType)}
}

// wholeMinutesFrom is the shortest range whose stats buckets are whole
// minutes (see interval).
const wholeMinutesFrom = time.Hour

// interval is the stats bucket width: Grafana's interval, else the range
// divided into at most MaxDataPoints buckets. Over a range of an hour or
// more it is rounded up to whole minutes (at most 60 points an hour), so
// that the query can read the per-minute rollups instead of every call.
func interval(dq backend.DataQuery) time.Duration {
	i := dq.Interval
	if i <= 0 {
		points := dq.MaxDataPoints
		if points <= 0 {
			points = defaultMaxDataPoints
		}
		i = dq.TimeRange.Duration() / time.Duration(points)
	}
	if dq.TimeRange.Duration() >= wholeMinutesFrom && i%qb.RollupInterval != 0 {
		i = i.Truncate(qb.RollupInterval) + qb.RollupInterval
	}
	return i
}

// frameOf runs st and reads its rows into a frame named name. A
// statement's percentile columns (qb.Statement.Percentiles) are computed
// from its histogram column, which the frame does not keep.
func (d *Datasource) frameOf(ctx context.Context, st qb.Statement, name string, notNull ...string) (*data.Frame, error) {
	rows, err := d.pool.Query(ctx, st.SQL, st.Args...)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", name, err)
	}
	hist := ""
	if len(st.Percentiles) > 0 {
		hist = qb.HistogramColumn
	}
	f, hists, err := scanFrame(rows, name, hist, notNull...)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", name, err)
	}
	if hist != "" {
		if err := fillPercentiles(f, st, hists); err != nil {
			return nil, fmt.Errorf("query %s: %w", name, err)
		}
	}
	return f, nil
}

// fillPercentiles sets st's percentile fields of f from each row's
// duration histogram.
func fillPercentiles(f *data.Frame, st qb.Statement, hists [][]int32) error {
	fields := make([]*data.Field, len(st.Percentiles))
	for i, p := range st.Percentiles {
		fld, _ := f.FieldByName(p.Column)
		if fld == nil || fld.Type() != data.FieldTypeNullableFloat64 {
			return fmt.Errorf("no float8 column %s for a percentile", p.Column)
		}
		fields[i] = fld
	}
	for row, h := range hists {
		for i, v := range st.FinishPercentiles(h) {
			fields[i].Set(row, v)
		}
	}
	return nil
}

// executed renders statements for the query inspector: the SQL, then the
// bind parameters as comments.
func executed(sts ...qb.Statement) string {
	var b strings.Builder
	for i, st := range sts {
		if i > 0 {
			b.WriteString("\n\n")
		}
		b.WriteString(st.SQL)
		b.WriteString(";")
		for j, a := range st.Args {
			v := fmt.Sprint(a)
			if t, ok := a.(time.Time); ok {
				v = t.UTC().Format(time.RFC3339Nano)
			}
			fmt.Fprintf(&b, "\n-- $%d = %s", j+1, v)
		}
	}
	return b.String()
}

// limitNotices warns when a result may be cut by its row limit.
func limitNotices(st qb.Statement, rows int, what string) []data.Notice {
	var n []data.Notice
	if st.Capped {
		n = append(n, data.Notice{Severity: data.NoticeSeverityWarning,
			Text: fmt.Sprintf("The limit was lowered to the maximum, %d %s.", st.Limit, what)})
	}
	if rows >= st.Limit {
		n = append(n, data.Notice{Severity: data.NoticeSeverityWarning,
			Text: fmt.Sprintf("Showing the first %d %s (the row limit): there may be more. Narrow the filters or raise the limit.", st.Limit, what)})
	}
	return n
}

// setUnit sets the display unit of the named field, when present.
func setUnit(f *data.Frame, name, unit string) {
	if i, _ := f.FieldByName(name); i != nil {
		if i.Config == nil {
			i.Config = &data.FieldConfig{}
		}
		i.Config.Unit = unit
	}
}
