package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"

	qb "github.com/orbweaver/orbweaver/grafana-plugin/pkg/querybuilder"
)

// defaultValuesRange is the time range of a values request without from/to.
const defaultValuesRange = 24 * time.Hour

// Value is one entry of a drop-down or template variable.
type Value struct {
	Value string `json:"value"`
	Text  string `json:"text"`
}

// CallResource serves GET
// values/{agents,servers,methods,statuses,templates,identifications}, with
// optional from and to (Unix milliseconds; default: the last 24 hours):
// a JSON array of {value, text}, at most querybuilder.MaxValues.
func (d *Datasource) CallResource(ctx context.Context, req *backend.CallResourceRequest, sender backend.CallResourceResponseSender) error {
	status, body := d.resource(ctx, req)
	raw, err := json.Marshal(body)
	if err != nil {
		status, raw = http.StatusInternalServerError, []byte(`{"error":"encode response"}`)
	}
	return sender.Send(&backend.CallResourceResponse{
		Status:  status,
		Headers: map[string][]string{"Content-Type": {"application/json"}},
		Body:    raw,
	})
}

func (d *Datasource) resource(ctx context.Context, req *backend.CallResourceRequest) (int, any) {
	type errBody struct {
		Error string `json:"error"`
	}
	if req.Method != http.MethodGet {
		return http.StatusMethodNotAllowed, errBody{"only GET"}
	}
	kind, ok := strings.CutPrefix(strings.Trim(req.Path, "/"), "values/")
	if !ok {
		return http.StatusNotFound, errBody{"unknown resource " + req.Path}
	}
	if d.settingsErr != nil {
		return http.StatusBadRequest, errBody{d.settingsErr.Error()}
	}
	tr, err := valuesRange(req.URL)
	if err != nil {
		return http.StatusBadRequest, errBody{err.Error()}
	}
	st, err := qb.Values(kind, tr)
	if err != nil {
		if errors.Is(err, qb.ErrInvalid) {
			return http.StatusNotFound, errBody{err.Error()}
		}
		return http.StatusBadRequest, errBody{err.Error()}
	}
	rows, err := d.pool.Query(ctx, st.SQL, st.Args...)
	if err != nil {
		return http.StatusInternalServerError, errBody{d.explain(err)}
	}
	defer rows.Close()
	values := []Value{}
	for rows.Next() {
		var v Value
		if err := rows.Scan(&v.Value, &v.Text); err != nil {
			return http.StatusInternalServerError, errBody{d.explain(err)}
		}
		values = append(values, v)
	}
	if err := rows.Err(); err != nil {
		return http.StatusInternalServerError, errBody{d.explain(err)}
	}
	return http.StatusOK, values
}

// valuesRange reads from and to (Unix ms) from a resource URL's query.
func valuesRange(raw string) (qb.TimeRange, error) {
	to := time.Now()
	tr := qb.TimeRange{From: to.Add(-defaultValuesRange), To: to}
	u, err := url.Parse(raw)
	if err != nil {
		return tr, errors.New("bad url")
	}
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"from", &tr.From}, {"to", &tr.To}} {
		if s := u.Query().Get(p.name); s != "" {
			ms, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return tr, errors.New(p.name + " is not Unix milliseconds")
			}
			*p.t = time.UnixMilli(ms).UTC()
		}
	}
	return tr, nil
}
