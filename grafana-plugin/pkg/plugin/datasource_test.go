package plugin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/data"

	"github.com/orbweaver/orbweaver/grafana-plugin/pkg/plugin"
	"github.com/orbweaver/orbweaver/grafana-plugin/pkg/querybuilder"
)

func ids(t *testing.T, f *data.Frame) []int64 {
	t.Helper()
	var out []int64
	for _, v := range column(t, f, "id") {
		out = append(out, v.(int64))
	}
	return out
}

func TestQueries(t *testing.T) {
	e := newEnv(t, true)

	t.Run("calls table", func(t *testing.T) {
		frames := ok(t, e.query(t, "calls", nil))
		if len(frames) != 1 {
			t.Fatalf("%d frames, want 1", len(frames))
		}
		f := frames[0]
		wantFields := []string{"id", "time", "agent_id", "client_ip", "client_port", "server_ip", "server_port", "method", "host",
			"path", "query", "status", "duration_ms", "request_body_size", "response_body_size", "parse_status", "x_request_id", "traceparent",
			"identification", "origin", "template", "token_not_yet_valid", "token_expired", "credentials_count", "multiple_credentials"}
		if got := fieldNames(f); !reflect.DeepEqual(got, wantFields) {
			t.Fatalf("fields = %v\nwant %v", got, wantFields)
		}
		if got, want := ids(t, f), []int64{6, 5, 4, 3, 7, 2, 1}; !reflect.DeepEqual(got, want) {
			t.Fatalf("ids = %v, want %v (newest first, call 8 outside the range)", got, want)
		}
		if got := column(t, f, "status"); got[1] != nil || got[0] != int64(404) {
			t.Fatalf("status = %v, want 404 then NULL (no response)", got)
		}
		if got := column(t, f, "duration_ms"); got[6] != 200.0 || got[1] != nil {
			t.Fatalf("duration_ms = %v, want call 1 = 200 and call 5 NULL", got)
		}
		if f.Meta == nil || !strings.Contains(f.Meta.ExecutedQueryString, "LIMIT $3") || !strings.Contains(f.Meta.ExecutedQueryString, "-- $3 = 1000") {
			t.Fatalf("ExecutedQueryString does not show the default limit 1000:\n%v", f.Meta)
		}
		idField, _ := f.FieldByName("id")
		if l := idField.Config.Links; len(l) != 2 || l[0].Title != "Open call tree" || l[0].Internal.DatasourceUID != e.settings.UID {
			t.Fatalf("id links = %+v", l)
		}
		// Row 2 is call 4, row 5 call 7 (no identification nor origin).
		for _, c := range []struct {
			field string
			want  []any
		}{
			{"identification", []any{injectionText, "alice", "bob", "svc-inventory", nil, "svc-orders", "alice"}},
			{"origin", []any{"10.0.0.1", "198.51.100.1", "203.0.113.8", "10.0.0.3", nil, "10.0.0.2", "203.0.113.7"}},
			{"template", []any{injectionText, "/api/orders/{id}", "/api/orders", "/price", "/health", "/api/stock/{id}", "/api/orders"}},
			{"token_not_yet_valid", []any{false, false, false, true, false, false, false}},
			{"token_expired", []any{false, false, false, false, false, true, false}},
			{"credentials_count", []any{int64(0), int64(1), int64(2), int64(1), int64(0), int64(1), int64(1)}},
			{"multiple_credentials", []any{false, false, true, false, false, false, false}},
		} {
			if got := column(t, f, c.field); !reflect.DeepEqual(got, c.want) {
				t.Errorf("%s = %v, want %v", c.field, got, c.want)
			}
		}
		goldenFrames(t, "calls_table", frames)
	})

	filters := []struct {
		name  string
		model map[string]any
		want  []int64
	}{
		{"server ip and port", map[string]any{"serverIp": "10.0.0.2", "serverPort": 8080}, []int64{6, 5, 4, 1}},
		{"client cidr", map[string]any{"clientIp": "10.0.0.0/30"}, []int64{6, 5, 3, 2, 1}},
		{"client port", map[string]any{"clientPort": 40002}, []int64{4}},
		{"agent", map[string]any{"agentId": agentA}, []int64{6, 5, 4, 3, 7, 2, 1}},
		{"other agent", map[string]any{"agentId": "33333333-3333-4333-8333-333333333333"}, nil},
		{"method lower case", map[string]any{"method": "post"}, []int64{4}},
		{"server name", map[string]any{"serverName": "pricing"}, []int64{3}},
		{"status", map[string]any{"status": 503}, []int64{3}},
		{"status class 5xx", map[string]any{"statusClass": "5xx"}, []int64{3}},
		{"status class none", map[string]any{"statusClass": "none"}, []int64{5}},
		{"path prefix", map[string]any{"pathPrefix": "/api/"}, []int64{5, 4, 2, 1}},
		{"path regex", map[string]any{"pathRegex": "^/api/orders/[0-9]+$"}, []int64{5}},
		{"free text finds the injection path", map[string]any{"search": "drop table"}, []int64{6}},
		{"min duration, slowest first", map[string]any{"minDurationMs": 100, "sort": "duration_desc"}, []int64{4, 1}},
		{"max duration", map[string]any{"maxDurationMs": 20, "sort": "duration_asc"}, []int64{7, 6, 3}},
		{"oldest first", map[string]any{"sort": "time_asc"}, []int64{1, 2, 7, 3, 4, 5, 6}},
		{"limit", map[string]any{"limit": 2}, []int64{6, 5}},
		// Multi-value filters (template variables with several values).
		{"several methods", map[string]any{"method": []string{"post", "GET"}, "serverName": []string{"pricing", "inventory"}}, []int64{3, 2}},
		{"several servers ip:port", map[string]any{"server": []string{"10.0.0.2:8081", "10.0.0.4:80"}}, []int64{3, 7}},
		{"several server ips", map[string]any{"serverIp": []string{"10.0.0.3", "10.0.0.4/32"}}, []int64{3, 2}},
		{"several agents", map[string]any{"agentId": []string{"33333333-3333-4333-8333-333333333333", agentA}, "limit": 1}, []int64{6}},
		{"several statuses, numbers and strings", map[string]any{"status": []any{201, "503"}}, []int64{4, 3}},
		{"several status classes", map[string]any{"statusClass": []string{"4xx", "none"}}, []int64{6, 5}},
		{"status classes without none", map[string]any{"statusClass": []string{"2xx", "5xx"}, "serverPort": 8080}, []int64{4, 1}},
		{"empty list is no filter", map[string]any{"method": []string{}, "limit": 1}, []int64{6}},
		// Derived fields (migration 0007); call 8 (alice, outside the range) never matches.
		{"identification", map[string]any{"identification": "alice"}, []int64{5, 1}},
		{"several identifications", map[string]any{"identification": []string{"bob", "svc-orders", "nobody"}}, []int64{4, 2}},
		{"identification is exact", map[string]any{"identification": "ALICE"}, nil},
		{"identification holding an injection, stored as text", map[string]any{"identification": injectionText}, []int64{6}},
		{"origin cidr", map[string]any{"origin": "203.0.113.0/24"}, []int64{4, 1}},
		{"several origins", map[string]any{"origin": []string{"198.51.100.1", "203.0.113.7", "10.0.0.0/30"}}, []int64{6, 5, 3, 2, 1}},
		{"origin is not the client ip", map[string]any{"origin": "10.0.0.9"}, nil},
		{"template", map[string]any{"template": "/api/orders"}, []int64{4, 1}},
		{"several templates", map[string]any{"template": []string{"/price", "/health"}}, []int64{3, 7}},
		{"template holding an injection, stored as text", map[string]any{"template": injectionText}, []int64{6}},
		{"template prefix", map[string]any{"templatePrefix": "/api/"}, []int64{5, 4, 2, 1}},
		{"template regex", map[string]any{"templateRegex": "[{]id[}]$"}, []int64{5, 2}},
		{"token expired", map[string]any{"tokenProblem": "expired"}, []int64{2}},
		{"token not yet valid or expired", map[string]any{"tokenProblem": []string{"not_yet_valid", "expired"}}, []int64{3, 2}},
		{"multiple credentials", map[string]any{"multipleCredentials": true}, []int64{4}},
		{"single credential", map[string]any{"multipleCredentials": false}, []int64{6, 5, 3, 7, 2, 1}},
		{"derived filters combined", map[string]any{"identification": []string{"alice", "bob"}, "template": "/api/orders", "origin": "203.0.113.8"}, []int64{4}},
	}
	for _, tt := range filters {
		t.Run("calls filter "+tt.name, func(t *testing.T) {
			f := ok(t, e.query(t, "calls", tt.model))[0]
			if got := ids(t, f); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ids = %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("limit notice", func(t *testing.T) {
		f := ok(t, e.query(t, "calls", map[string]any{"limit": 2}))[0]
		if len(f.Meta.Notices) != 1 || !strings.Contains(f.Meta.Notices[0].Text, "first 2 calls") {
			t.Fatalf("notices = %+v", f.Meta.Notices)
		}
	})

	t.Run("SQL injection in every text filter", func(t *testing.T) {
		for _, field := range []string{"serverName", "method", "pathPrefix", "pathRegex", "search", "sort", "statusClass", "format", "agentId", "serverIp", "clientIp", "server",
			"identification", "origin", "template", "templatePrefix", "templateRegex", "tokenProblem", "multipleCredentials"} {
			r := e.query(t, "calls", map[string]any{field: "x' OR '1'='1'; DROP TABLE agents; --"})
			if r.Error != nil {
				if r.Status != backend.StatusBadRequest || strings.Contains(r.Error.Error(), "SELECT") {
					t.Errorf("%s: status %d, error %q: want 400 without SQL", field, r.Status, r.Error)
				}
				continue
			}
			if n, _ := r.Frames[0].RowLen(); n != 0 {
				t.Errorf("%s: %d rows, want 0", field, n)
			}
		}
		// The same attempts grouped by the new dimensions.
		for _, field := range []string{"identification", "origin", "template", "templatePrefix", "templateRegex", "tokenProblem"} {
			r := e.query(t, "stats", map[string]any{field: "x' OR '1'='1'; DROP TABLE agents; --", "groupBy": []string{"template", "identification", "origin"}})
			if r.Error != nil {
				if r.Status != backend.StatusBadRequest || strings.Contains(r.Error.Error(), "SELECT") {
					t.Errorf("stats %s: status %d, error %q: want 400 without SQL", field, r.Status, r.Error)
				}
				continue
			}
			if n, _ := r.Frames[0].RowLen(); n != 0 {
				t.Errorf("stats %s: %d rows, want 0", field, n)
			}
		}
		// The tables are intact.
		if n, _ := ok(t, e.query(t, "calls", nil))[0].RowLen(); n != 7 {
			t.Fatalf("%d calls after the attempts, want 7", n)
		}
		if n, _ := ok(t, e.query(t, "agents", nil))[0].RowLen(); n != 1 {
			t.Fatalf("%d agents after the attempts, want 1", n)
		}
	})

	t.Run("calls logs", func(t *testing.T) {
		frames := ok(t, e.query(t, "calls", map[string]any{"format": "logs", "sort": "time_asc", "limit": 3}))
		f := frames[0]
		if got, want := fieldNames(f), []string{"timestamp", "body", "severity", "id", "labels"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("fields = %v, want %v", got, want)
		}
		if f.Meta.Type != data.FrameTypeLogLines {
			t.Fatalf("meta type = %q", f.Meta.Type)
		}
		if got, want := column(t, f, "body")[0], "GET /api/orders → 200 in 200.000 ms (10.0.0.1:40001 → 10.0.0.2:8080)"; got != want {
			t.Fatalf("body = %q, want %q", got, want)
		}
		if got, want := column(t, f, "severity"), []any{"info", "info", "info"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("severity = %v", got)
		}
		goldenFrames(t, "calls_logs", frames)
	})

	t.Run("stats ungrouped", func(t *testing.T) {
		frames := ok(t, e.query(t, "stats", map[string]any{"metrics": []string{"rate", "error_rate", "p50", "p99", "bytes"}}))
		f := frames[0]
		if got, want := fieldNames(f), []string{"time", "rate", "error_rate", "p50_ms", "p99_ms", "bytes"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("fields = %v, want %v", got, want)
		}
		// Bucket 10:00 holds calls 1, 2, 3, 4, 5, 7 (2 errors: 503 and no
		// response); bucket 10:01 holds call 6.
		if got, want := column(t, f, "rate"), []any{6.0 / 60, 1.0 / 60}; !reflect.DeepEqual(got, want) {
			t.Fatalf("rate = %v, want %v", got, want)
		}
		if got, want := column(t, f, "error_rate"), []any{2.0 / 6, 0.0}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("error_rate = %v, want %v", got, want)
		}
		// From the rollups, percentiles are estimates within the bound; with
		// "exact", percentile_cont over the calls.
		if !strings.Contains(f.Meta.ExecutedQueryString, "http_calls_1m") {
			t.Errorf("the query does not read the rollups:\n%s", f.Meta.ExecutedQueryString)
		}
		for i, want := range []float64{50, 10} {
			got, _ := column(t, f, "p50_ms")[i].(float64)
			if math.Abs(got-want)/want > querybuilder.PercentileRelativeError {
				t.Errorf("p50_ms[%d] = %v, want %v within %.2f%% (durations 8, 20, 50, 200, 350)", i, got, want, 100*querybuilder.PercentileRelativeError)
			}
		}
		exact := ok(t, e.query(t, "stats", map[string]any{"metrics": []string{"p50"}, "exact": true}))[0]
		if got, want := column(t, exact, "p50_ms"), []any{50.0, 10.0}; !reflect.DeepEqual(got, want) {
			t.Fatalf("exact p50_ms = %v, want %v (durations 8, 20, 50, 200, 350)", got, want)
		}
		goldenFrames(t, "stats_ungrouped", frames)
	})

	t.Run("stats grouped by server, top 2", func(t *testing.T) {
		frames := ok(t, e.query(t, "stats", map[string]any{"groupBy": []string{"server"}, "topN": 2}))
		f := frames[0]
		want := []string{"time", "rate{server=10.0.0.2:8080}", "rate{server=10.0.0.2:8081}"}
		if got := fieldNames(f); !reflect.DeepEqual(got, want) {
			t.Fatalf("fields = %v, want %v", got, want)
		}
		if got := column(t, f, "rate"); !reflect.DeepEqual(got, []any{3.0 / 60, 1.0 / 60}) {
			t.Fatalf("rate of 10.0.0.2:8080 = %v", got)
		}
		goldenFrames(t, "stats_grouped", frames)
	})

	t.Run("stats grouped by template, top 2", func(t *testing.T) {
		frames := ok(t, e.query(t, "stats", map[string]any{"groupBy": []string{"template"}, "topN": 2}))
		f := frames[0]
		// /api/orders has calls 1 and 4; the one-call templates tie and
		// sort by name.
		want := []string{"time", "rate{template=/api/orders}", "rate{template=/api/orders/{id}}"}
		if got := fieldNames(f); !reflect.DeepEqual(got, want) {
			t.Fatalf("fields = %v, want %v", got, want)
		}
		if got := column(t, f, "time"); fmt.Sprint(got) != fmt.Sprint([]any{t0}) {
			t.Fatalf("buckets = %v, want the 10:00 bucket only", got)
		}
		if got := fmt.Sprint(column(t, f, "rate")); got != fmt.Sprint([]any{2.0 / 60}) {
			t.Fatalf("rate of /api/orders = %v, want 2/60", got)
		}
		goldenFrames(t, "stats_grouped_template", frames)
	})

	t.Run("stats grouped by template with a token filter", func(t *testing.T) {
		f := ok(t, e.query(t, "stats", map[string]any{"groupBy": []string{"template"}, "tokenProblem": []string{"expired", "not_yet_valid"}, "metrics": []string{"p95"}}))[0]
		want := []string{"time", "p95_ms{template=/api/stock/{id}}", "p95_ms{template=/price}"}
		if got := fieldNames(f); !reflect.DeepEqual(got, want) {
			t.Fatalf("fields = %v, want %v", got, want)
		}
	})

	t.Run("stats grouped by identification and origin", func(t *testing.T) {
		f := ok(t, e.query(t, "stats", map[string]any{"groupBy": []string{"identification", "origin"}, "topN": 100, "serverPort": 8081}))[0]
		// Call 7 has neither: identification "" and origin "none".
		if got, want := fieldNames(f), []string{"time", "rate{identification=, origin=none}"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("fields = %v, want %v", got, want)
		}
		f = ok(t, e.query(t, "stats", map[string]any{"groupBy": []string{"identification"}, "identification": "alice", "origin": "203.0.113.0/24"}))[0]
		if got, want := fieldNames(f), []string{"time", "rate{identification=alice}"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("fields = %v, want %v", got, want)
		}
		if got := fmt.Sprint(column(t, f, "rate")); got != fmt.Sprint([]any{1.0 / 60}) {
			t.Fatalf("rate = %v, want call 1 only", got)
		}
	})

	t.Run("stats by every dimension with every metric", func(t *testing.T) {
		for _, dim := range querybuilder.Dimensions() {
			f := ok(t, e.query(t, "stats", map[string]any{"groupBy": []string{dim}, "metrics": querybuilder.Metrics()}))[0]
			for _, fld := range f.Fields[1:] {
				if _, found := fld.Labels[dim]; !found {
					t.Errorf("group by %s: field %s has labels %v", dim, fld.Name, fld.Labels)
				}
			}
		}
		f := ok(t, e.query(t, "stats", map[string]any{"groupBy": querybuilder.Dimensions(), "metrics": querybuilder.Metrics(), "topN": 100}))[0]
		// 7 metrics for each of the 7 distinct calls' dimension tuples.
		if got := len(f.Fields); got != 1+7*7 {
			t.Fatalf("grouped by all dimensions: %d fields, want 50", got)
		}
	})

	t.Run("stats as an alert rule sends it", func(t *testing.T) {
		// No interval and no max data points: buckets of range/1000 = 3.6 s,
		// rounded up to a minute over a range of an hour.
		r := e.queries(t, backend.DataQuery{RefID: "A", JSON: json.RawMessage(`{"queryType":"stats","metrics":["error_rate"],"groupBy":["status"]}`), TimeRange: fullHour})["A"]
		f := ok(t, r)[0]
		if f.Meta.Type != data.FrameTypeTimeSeriesWide {
			t.Fatalf("frame type = %q, want timeseries-wide", f.Meta.Type)
		}
		want := fmt.Sprint([]any{t0, t0.Add(time.Minute)})
		if got := fmt.Sprint(column(t, f, "time")); got != want {
			t.Fatalf("buckets = %v, want %v", got, want)
		}
		if got, want := fieldNames(f), []string{"time", "error_rate{status=200}", "error_rate{status=201}", "error_rate{status=404}", "error_rate{status=503}", "error_rate{status=none}"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("fields = %v, want %v", got, want)
		}
		// Over half an hour, Grafana's interval as it is.
		half := backend.TimeRange{From: t0, To: t0.Add(30 * time.Minute)}
		r = e.queries(t, backend.DataQuery{RefID: "A", JSON: json.RawMessage(`{"queryType":"stats"}`), TimeRange: half, Interval: 45 * time.Second})["A"]
		if got, want := fmt.Sprint(column(t, ok(t, r)[0], "time")), fmt.Sprint([]any{t0, t0.Add(90 * time.Second)}); got != want {
			t.Fatalf("45 s buckets over 30 min = %v, want %v", got, want)
		}
	})

	t.Run("service map", func(t *testing.T) {
		frames := ok(t, e.query(t, "serviceMap", nil))
		if len(frames) != 2 || frames[0].Name != "nodes" || frames[1].Name != "edges" {
			t.Fatalf("frames = %v", frames)
		}
		nodes, edges := frames[0], frames[1]
		if got, want := column(t, edges, "id"), []any{"10.0.0.1->10.0.0.2", "10.0.0.2->10.0.0.3", "10.0.0.3->10.0.0.4", "10.0.0.5->10.0.0.2", "10.0.0.9->10.0.0.2"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("edges = %v, want %v", got, want)
		}
		if got, want := column(t, edges, "mainstat"), []any{3.0, 1.0, 1.0, 1.0, 1.0}; !reflect.DeepEqual(got, want) {
			t.Fatalf("edge calls = %v, want %v", got, want)
		}
		if got := column(t, edges, "secondarystat"); fmt.Sprint(got) != fmt.Sprint([]any{100.0 / 3, 0.0, 100.0, 0.0, 0.0}) {
			t.Fatalf("edge error %% = %v", got)
		}
		if got, want := column(t, nodes, "id"), []any{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.9"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("nodes = %v, want %v", got, want)
		}
		// 10.0.0.2 served calls 1, 4, 5, 6 and 7; call 5 got no response.
		if got := column(t, nodes, "arc__errors")[1]; got != 0.2 {
			t.Fatalf("10.0.0.2 error arc = %v, want 0.2", got)
		}
		goldenFrames(t, "service_map", frames)
	})

	t.Run("call tree", func(t *testing.T) {
		frames := ok(t, e.query(t, "callTree", map[string]any{"callId": "1"}))
		f := frames[0]
		if f.Meta.PreferredVisualization != data.VisTypeTrace {
			t.Fatalf("visualisation = %q", f.Meta.PreferredVisualization)
		}
		if got, want := column(t, f, "spanID"), []any{"1", "2", "3"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("spans = %v, want %v", got, want)
		}
		if got, want := column(t, f, "parentSpanID"), []any{"", "1", "2"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("parents = %v, want %v", got, want)
		}
		if got, want := column(t, f, "serviceName"), []any{"orders", "inventory", "pricing"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("services = %v", got)
		}
		if got, want := column(t, f, "duration"), []any{200.0, 50.0, 20.0}; !reflect.DeepEqual(got, want) {
			t.Fatalf("durations = %v", got)
		}
		if got, want := column(t, f, "statusCode"), []any{int64(1), int64(1), int64(2)}; !reflect.DeepEqual(got, want) {
			t.Fatalf("status codes = %v", got)
		}
		if got := column(t, f, "startTime")[0]; got != float64(t0.UnixMilli()+1000) {
			t.Fatalf("root start = %v, want %d", got, t0.UnixMilli()+1000)
		}
		// Span tags carry the derived fields.
		for i, want := range []map[string]any{
			{"identification": "alice", "template": "/api/orders"},
			{"identification": "svc-orders", "template": "/api/stock/{id}", "token_expired": true},
			{"identification": "svc-inventory", "template": "/price", "token_not_yet_valid": true},
		} {
			var kv []struct {
				Key   string `json:"key"`
				Value any    `json:"value"`
			}
			if err := json.Unmarshal(column(t, f, "tags")[i].(json.RawMessage), &kv); err != nil {
				t.Fatal(err)
			}
			got := map[string]any{}
			for _, tag := range kv {
				switch tag.Key {
				case "identification", "template", "token_expired", "token_not_yet_valid":
					got[tag.Key] = tag.Value
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("span %d derived tags = %v, want %v", i+1, got, want)
			}
		}
		goldenFrames(t, "call_tree", frames)
	})

	t.Run("call tree depth 1", func(t *testing.T) {
		f := ok(t, e.query(t, "callTree", map[string]any{"callId": "1", "maxDepth": 1}))[0]
		if got, want := column(t, f, "spanID"), []any{"1", "2"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("spans = %v, want %v", got, want)
		}
	})

	t.Run("call tree uses the traceparent trace id", func(t *testing.T) {
		f := ok(t, e.query(t, "callTree", map[string]any{"callId": "2"}))[0]
		if got := column(t, f, "traceID"); !reflect.DeepEqual(got, []any{"0af7651916cd43dd8448eb211c80319c", "0af7651916cd43dd8448eb211c80319c"}) {
			t.Fatalf("trace ids = %v", got)
		}
	})

	t.Run("call tree from a trace id", func(t *testing.T) {
		f := ok(t, e.query(t, "callTree", map[string]any{"traceId": "0af7651916cd43dd8448eb211c80319c"}))[0]
		if got := column(t, f, "spanID"); !reflect.DeepEqual(got, []any{"2", "3"}) {
			t.Fatalf("spans = %v, want call 2 (carries the trace id) and its child 3", got)
		}
		r := e.query(t, "callTree", map[string]any{"traceId": "00000000000000000000000000000001"})
		if r.Error == nil || !strings.Contains(r.Error.Error(), "no call with trace id") {
			t.Fatalf("unknown trace id: %v", r.Error)
		}
	})

	t.Run("concurrent calls", func(t *testing.T) {
		frames := ok(t, e.query(t, "concurrent", map[string]any{"callId": "1"}))
		if got, want := ids(t, frames[0]), []int64{4}; !reflect.DeepEqual(got, want) {
			t.Fatalf("ids = %v, want %v (call 7 is on another port, call 5 later)", got, want)
		}
		goldenFrames(t, "concurrent", frames)
	})

	t.Run("empty results", func(t *testing.T) {
		none := "33333333-3333-4333-8333-333333333333"
		for _, q := range []struct {
			queryType string
			model     map[string]any
		}{
			{"calls", map[string]any{"serverIp": "192.0.2.1"}},
			{"calls", map[string]any{"serverIp": "192.0.2.1", "format": "logs"}},
			{"stats", map[string]any{"serverIp": "192.0.2.1"}},
			{"stats", map[string]any{"serverIp": "192.0.2.1", "groupBy": []string{"server", "method"}, "metrics": []string{"p99", "bytes"}}},
			{"serviceMap", map[string]any{"serverIp": "192.0.2.1"}},
			{"concurrent", map[string]any{"callId": "999"}},
			{"agents", map[string]any{"agentId": none}},
			{"agents", map[string]any{"agentId": none, "agentView": "heartbeats"}},
		} {
			frames := ok(t, e.query(t, q.queryType, q.model))
			for _, f := range frames {
				if n, _ := f.RowLen(); n != 0 {
					t.Errorf("%s %v: frame %s has %d rows, want 0", q.queryType, q.model, f.Name, n)
				}
			}
		}
	})

	t.Run("agents table", func(t *testing.T) {
		frames := ok(t, e.query(t, "agents", nil))
		f := frames[0]
		if got := column(t, f, "name"); !reflect.DeepEqual(got, []any{"edge-1"}) {
			t.Fatalf("names = %v", got)
		}
		if got := column(t, f, "packets"); !reflect.DeepEqual(got, []any{int64(250)}) {
			t.Fatalf("latest packets = %v, want 250", got)
		}
		goldenFrames(t, "agents", frames)
	})

	t.Run("agent heartbeats", func(t *testing.T) {
		frames := ok(t, e.query(t, "agents", map[string]any{"agentView": "heartbeats"}))
		f := frames[0]
		if got := column(t, f, "packets"); !reflect.DeepEqual(got, []any{100.0, 250.0}) {
			t.Fatalf("packets = %v", got)
		}
		if fld, _ := f.FieldByName("packets"); fld.Labels["agent"] != "edge-1" {
			t.Fatalf("labels = %v", fld.Labels)
		}
		goldenFrames(t, "heartbeats", frames)
	})
}

// TestErrorPerQuery checks that bad queries fail alone, each with its own
// message, next to a good one.
func TestErrorPerQuery(t *testing.T) {
	e := newEnv(t, true)
	q := func(ref, queryType, raw string) backend.DataQuery {
		return backend.DataQuery{RefID: ref, QueryType: queryType, JSON: json.RawMessage(raw), TimeRange: fullHour}
	}
	resp := e.queries(t,
		q("A", "calls", `{}`),
		q("B", "calls", `{"serverPort":`),
		q("C", "nope", `{}`),
		q("D", "calls", `{"pathRegex":"("}`),
		q("E", "callTree", `{"callId":"999"}`),
		q("F", "stats", `{"metrics":["p42"]}`),
		q("G", "calls", `{"serverIp":"not-an-ip"}`),
	)
	if n, _ := ok(t, resp["A"])[0].RowLen(); n != 7 {
		t.Fatalf("A: %d rows, want 7", n)
	}
	for ref, want := range map[string]string{
		"B": "decode query",
		"C": `unknown query type "nope"`,
		"D": "invalid value: invalid regular expression",
		"E": "call 999 was not found",
		"F": `metric "p42"`,
		"G": "not an IP address",
	} {
		r := resp[ref]
		if r.Error == nil || !strings.Contains(r.Error.Error(), want) || r.Status != backend.StatusBadRequest {
			t.Errorf("%s: status %d, error %v; want 400 with %q", ref, r.Status, r.Error, want)
		}
	}
}

func TestCheckHealth(t *testing.T) {
	t.Run("ok", func(t *testing.T) {
		e := newEnv(t, true)
		res := e.health(t)
		if res.Status != backend.HealthStatusOk || !regexp.MustCompile(`^Connected to 127\.0\.0\.1:\d+ as grafana_ro_\d+: Orbweaver schema version \d+ on PostgreSQL\.$`).MatchString(res.Message) {
			t.Fatalf("health = %v %q", res.Status, res.Message)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		e := newEnv(t, true)
		e.settings.DecryptedSecureJSONData = map[string]string{"password": "wrong"}
		res := e.health(t)
		if res.Status != backend.HealthStatusError || !strings.Contains(res.Message, "Check the user and password") || strings.Contains(res.Message, "wrong") {
			t.Fatalf("health = %v %q", res.Status, res.Message)
		}
	})
	t.Run("no schema", func(t *testing.T) {
		e := newEnv(t, false)
		res := e.health(t)
		if res.Status != backend.HealthStatusError || !strings.Contains(res.Message, "has no Orbweaver schema") {
			t.Fatalf("health = %v %q", res.Status, res.Message)
		}
	})
	t.Run("old schema", func(t *testing.T) {
		e := newEnv(t, true)
		admin(t, e.adminURL, "DELETE FROM schema_migrations WHERE version >= 13")
		res := e.health(t)
		if res.Status != backend.HealthStatusError || !strings.Contains(res.Message, "is at version 12; this plugin needs version 13") {
			t.Fatalf("health = %v %q", res.Status, res.Message)
		}
	})
	t.Run("no read permission", func(t *testing.T) {
		e := newEnv(t, true)
		admin(t, e.adminURL, "REVOKE SELECT ON http_calls FROM orbweaver_reader") // this database only
		res := e.health(t)
		if res.Status != backend.HealthStatusError || !strings.Contains(res.Message, "may not read the Orbweaver tables") {
			t.Fatalf("health = %v %q", res.Status, res.Message)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		e := newEnv(t, false)
		e.settings.URL = "127.0.0.1:1"
		res := e.health(t)
		if res.Status != backend.HealthStatusError || !strings.Contains(res.Message, "127.0.0.1:1") {
			t.Fatalf("health = %v %q", res.Status, res.Message)
		}
	})
	t.Run("incomplete settings", func(t *testing.T) {
		e := newEnv(t, false)
		e.settings.User = ""
		res := e.health(t)
		if res.Status != backend.HealthStatusError || !strings.Contains(res.Message, "the user is empty") {
			t.Fatalf("health = %v %q", res.Status, res.Message)
		}
	})
}

func TestResources(t *testing.T) {
	e := newEnv(t, true)
	getRange := func(path string, from, to time.Time) (int, string) {
		var status int
		var body string
		err := e.client.CallResource(context.Background(), &backend.CallResourceRequest{
			PluginContext: backend.PluginContext{OrgID: 1, PluginID: plugin.ID, DataSourceInstanceSettings: &e.settings},
			Path:          path, Method: "GET",
			URL: fmt.Sprintf("%s?from=%d&to=%d", path, from.UnixMilli(), to.UnixMilli()),
		}, backend.CallResourceResponseSenderFunc(func(r *backend.CallResourceResponse) error {
			status, body = r.Status, string(r.Body)
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		return status, body
	}
	get := func(path string) (int, string) { return getRange(path, t0, t0.Add(time.Hour)) }
	injectionJSON, _ := json.Marshal(injectionText)
	for _, tt := range []struct{ path, want string }{
		// Most frequent first, then by value; call 8 (outside the range) not counted.
		{"values/templates", `[{"value":"/api/orders","text":"/api/orders"},{"value":"/api/orders/{id}","text":"/api/orders/{id}"},` +
			`{"value":"/api/stock/{id}","text":"/api/stock/{id}"},{"value":"/health","text":"/health"},{"value":"/price","text":"/price"},` +
			`{"value":` + string(injectionJSON) + `,"text":` + string(injectionJSON) + `}]`},
		{"values/identifications", `[{"value":"alice","text":"alice"},{"value":` + string(injectionJSON) + `,"text":` + string(injectionJSON) + `},` +
			`{"value":"bob","text":"bob"},{"value":"svc-inventory","text":"svc-inventory"},{"value":"svc-orders","text":"svc-orders"}]`},
		{"values/methods", `[{"value":"GET","text":"GET"},{"value":"POST","text":"POST"}]`},
		{"values/agents", `[{"value":"` + agentA + `","text":"edge-1"}]`},
		{"values/servers", `[{"value":"10.0.0.2:8080","text":"10.0.0.2:8080"},{"value":"10.0.0.2:8081","text":"10.0.0.2:8081"},{"value":"10.0.0.3:9090","text":"10.0.0.3:9090"},{"value":"10.0.0.4:80","text":"10.0.0.4:80"}]`},
		{"values/statuses", `[{"value":"200","text":"200"},{"value":"201","text":"201"},{"value":"404","text":"404"},{"value":"503","text":"503"}]`},
	} {
		status, body := get(tt.path)
		if status != 200 || body != tt.want {
			t.Errorf("%s: %d %s\nwant %s", tt.path, status, body, tt.want)
		}
	}
	// Bounded by the time range: only call 8 starts in [t0+2h, t0+3h).
	for path, want := range map[string]string{
		"values/templates":       `[{"value":"/api/orders","text":"/api/orders"}]`,
		"values/identifications": `[{"value":"alice","text":"alice"}]`,
	} {
		if status, body := getRange(path, t0.Add(2*time.Hour), t0.Add(3*time.Hour)); status != 200 || body != want {
			t.Errorf("%s two hours later: %d %s\nwant %s", path, status, body, want)
		}
		if status, body := getRange(path, t0.Add(-2*time.Hour), t0.Add(-time.Hour)); status != 200 || body != "[]" {
			t.Errorf("%s before the calls: %d %s, want []", path, status, body)
		}
	}
	if status, _ := get("values/passwords"); status != 404 {
		t.Errorf("unknown values: status %d, want 404", status)
	}
}
