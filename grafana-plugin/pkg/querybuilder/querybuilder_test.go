package querybuilder

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.sql")

var tr = TimeRange{
	From: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC),
	To:   time.Date(2026, 11, 20, 11, 0, 0, 0, time.UTC),
}

// trUnaligned starts and ends within a minute.
var trUnaligned = TimeRange{
	From: time.Date(2026, 11, 20, 10, 0, 12, 500_000_000, time.UTC),
	To:   time.Date(2026, 11, 20, 11, 0, 12, 500_000_000, time.UTC),
}

func ms(v float64) *float64 { return &v }

// golden renders a statement as the SQL followed by its arguments, one per
// comment line, and compares it with testdata/<name>.golden.sql.
func golden(t *testing.T, name string, st Statement) {
	t.Helper()
	var b strings.Builder
	b.WriteString(st.SQL)
	b.WriteString(";\n")
	for i, a := range st.Args {
		v := fmt.Sprint(a)
		if tm, ok := a.(time.Time); ok {
			v = tm.Format(time.RFC3339Nano)
		}
		fmt.Fprintf(&b, "-- $%d (%T) = %s\n", i+1, a, v)
	}
	fmt.Fprintf(&b, "-- limit %d, capped %t\n", st.Limit, st.Capped)
	for _, p := range st.Percentiles {
		fmt.Fprintf(&b, "-- %s = percentile %g of %s\n", p.Column, p.P, HistogramColumn)
	}
	path := filepath.Join("testdata", name+".golden.sql")
	if *update {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestGolden(t *testing.T) {
	yes, no := true, false
	allFilters := Filters{
		AgentID:       List{"6F1C1A8E-3B2D-4C5E-9F10-112233445566"},
		ClientIP:      List{"10.0.0.0/8"},
		ClientPort:    40000,
		ServerIP:      List{"::ffff:192.168.1.10"},
		ServerPort:    8080,
		Server:        List{"[::ffff:192.168.1.10]:8080"},
		ServerName:    List{"orders.internal"},
		Method:        List{"post"},
		PathPrefix:    "/api/",
		PathRegex:     "^/api/v[0-9]+/orders",
		Search:        "Order",
		Status:        IntList{503},
		StatusClass:   List{"5xx"},
		MinDurationMs: ms(1.5),
		MaxDurationMs: ms(2000),

		Identification:      List{"alice"},
		Origin:              List{"203.0.113.0/24"},
		Template:            List{"/api/orders/{id}"},
		TemplatePrefix:      "/api/",
		TemplateRegex:       "^/api/orders/",
		TokenProblem:        List{"expired"},
		MultipleCredentials: &yes,
	}
	tests := []struct {
		name  string
		build func() (Statement, error)
	}{
		{"calls_default", func() (Statement, error) { return Calls(Query{}, tr) }},
		{"calls_all_filters", func() (Statement, error) {
			return Calls(Query{Filters: allFilters, Sort: "duration_desc", Limit: 50}, tr)
		}},
		{"calls_limit_capped", func() (Statement, error) {
			return Calls(Query{Format: "logs", Sort: "time_asc", Limit: 10_000_000, Filters: Filters{StatusClass: List{"none"}}}, tr)
		}},
		{"calls_multi_value", func() (Statement, error) {
			return Calls(Query{Filters: Filters{
				AgentID:     List{"6f1c1a8e-3b2d-4c5e-9f10-112233445566", "11111111-1111-4111-8111-111111111111"},
				ServerIP:    List{"10.0.0.2", "10.1.0.0/16"},
				Server:      List{"10.0.0.2:8080", "10.0.0.3:9090"},
				ServerName:  List{"orders", "pricing"},
				Method:      List{"get", "POST"},
				Status:      IntList{404, 503},
				StatusClass: List{"4xx", "none", "5xx"},
			}}, tr)
		}},
		{"calls_derived_fields", func() (Statement, error) {
			return Calls(Query{Filters: Filters{
				Identification:      List{"alice", "svc-billing"},
				Origin:              List{"203.0.113.7", "2001:db8::/32"},
				Template:            List{"/api/orders/{id}", "/api/users/{uuid}"},
				TokenProblem:        List{"NOT_YET_VALID", "expired", "expired"},
				MultipleCredentials: &no,
			}}, tr)
		}},
		{"stats_grouped_template", func() (Statement, error) {
			return Stats(Query{
				Metrics: []string{"rate", "p95"},
				GroupBy: []string{"template", "identification", "origin"},
				Filters: Filters{TemplatePrefix: "/api/"},
			}, tr, time.Minute, Postgres)
		}},
		{"values_templates", func() (Statement, error) { return Values(ValuesTemplates, tr) }},
		{"values_identifications", func() (Statement, error) { return Values(ValuesIdentifications, tr) }},
		{"tail_cursor", func() (Statement, error) { return TailCursor(tr.From), nil }},
		{"tail", func() (Statement, error) {
			return Tail(Query{Format: "logs", Sort: "duration_desc", Limit: 5, Filters: Filters{
				ServerIP: List{"10.0.0.2"}, Method: List{"GET", "PUT"}, StatusClass: List{"5xx"},
			}}, tr.From, 42)
		}},
		{"stats_rate", func() (Statement, error) { return Stats(Query{QueryType: TypeStats}, tr, time.Minute, Postgres) }},
		{"stats_grouped", func() (Statement, error) {
			return Stats(Query{
				Metrics: []string{"rate", "error_rate", "p50", "p90", "p95", "p99", "bytes"},
				GroupBy: []string{"server", "method", "server"},
				TopN:    5,
				Filters: Filters{PathPrefix: "/api"},
			}, tr, 30*time.Second, Postgres)
		}},
		{"stats_grouped_timescaledb", func() (Statement, error) {
			return Stats(Query{Metrics: []string{"p95"}, GroupBy: []string{"client", "status", "agent", "host"}}, tr, time.Millisecond, TimescaleDB)
		}},
		{"calls_one_server_errors", func() (Statement, error) {
			return Calls(Query{Filters: Filters{Server: List{"10.10.0.7:8080"}, Method: List{"GET"}, StatusClass: List{"5xx"}}}, tr)
		}},
		{"calls_status_classes", func() (Statement, error) {
			return Calls(Query{Filters: Filters{StatusClass: List{"5XX", "none", "1xx", "2xx", "4xx"}}}, tr)
		}},
		{"stats_rollup", func() (Statement, error) {
			return Stats(Query{Metrics: []string{"rate", "error_rate", "p50", "p99", "bytes"}}, trUnaligned, time.Minute, Postgres)
		}},
		{"stats_rollup_grouped", func() (Statement, error) {
			return Stats(Query{
				Metrics: []string{"rate", "p95"},
				GroupBy: []string{"server", "agent"},
				Filters: Filters{AgentID: List{agentOK}, ServerIP: List{"10.10.0.0/16"}, ServerPort: 8080, Server: List{"10.10.0.7:8080", "10.10.0.8:8080"}},
			}, trUnaligned, 5*time.Minute, Postgres)
		}},
		{"stats_rollup_timescaledb", func() (Statement, error) {
			return Stats(Query{Metrics: []string{"error_rate"}, GroupBy: []string{"server"}}, tr, time.Hour, TimescaleDB)
		}},
		{"stats_exact", func() (Statement, error) {
			return Stats(Query{Exact: true, Metrics: []string{"p95"}, GroupBy: []string{"server"}}, tr, time.Minute, Postgres)
		}},
		{"service_map_nodes_rollup", func() (Statement, error) {
			return ServiceMapNodes(Query{Filters: Filters{AgentID: List{agentOK}}}, trUnaligned, []string{"10.0.0.1", "10.0.0.2"})
		}},
		{"service_map_edges", func() (Statement, error) {
			return ServiceMapEdges(Query{Filters: Filters{Method: List{"GET"}}, Limit: 5000}, tr)
		}},
		{"service_map_edges_rollup", func() (Statement, error) {
			return ServiceMapEdges(Query{Filters: Filters{Server: List{"10.0.0.1:8080"}}}, trUnaligned)
		}},
		{"service_map_edges_exact", func() (Statement, error) {
			return ServiceMapEdges(Query{Exact: true}, tr)
		}},
		{"service_map_nodes", func() (Statement, error) {
			return ServiceMapNodes(Query{Filters: Filters{Method: List{"GET"}}}, tr, []string{"10.0.0.1", "10.0.0.2"})
		}},
		{"call_tree", func() (Statement, error) { return CallTree(Query{CallID: "42", MaxDepth: 3}, tr) }},
		{"call_tree_trace_id", func() (Statement, error) {
			return CallTree(Query{TraceID: "0AF7651916CD43DD8448EB211C80319C"}, tr)
		}},
		{"concurrent", func() (Statement, error) { return Concurrent(Query{CallID: "42"}, tr) }},
		{"agents", func() (Statement, error) { return Agents(Query{}, tr) }},
		{"values_servers", func() (Statement, error) { return Values(ValuesServers, tr) }},
		{"heartbeats", func() (Statement, error) {
			return Heartbeats(Query{Filters: Filters{AgentID: List{"6f1c1a8e-3b2d-4c5e-9f10-112233445566"}}}, tr)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := tt.build()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name, st)
		})
	}
}

const agentOK = "6f1c1a8e-3b2d-4c5e-9f10-112233445566"

func TestInvalid(t *testing.T) {
	tests := []struct {
		name  string
		build func() (Statement, error)
		want  string
	}{
		{"empty range", func() (Statement, error) { return Calls(Query{}, TimeRange{From: tr.To, To: tr.From}) }, "time range"},
		{"bad agent", func() (Statement, error) {
			return Calls(Query{Filters: Filters{AgentID: List{agentOK, "x' OR 1=1"}}}, tr)
		}, "not a UUID"},
		{"bad ip", func() (Statement, error) { return Calls(Query{Filters: Filters{ServerIP: List{"1.2.3.4'; --"}}}, tr) }, "not an IP address"},
		{"bad origin", func() (Statement, error) {
			return Calls(Query{Filters: Filters{Origin: List{"10.0.0.1", "x' OR 1=1 --"}}}, tr)
		}, "origin"},
		{"bad token problem", func() (Statement, error) {
			return Calls(Query{Filters: Filters{TokenProblem: List{"expired", "revoked"}}}, tr)
		}, "token problem"},
		{"bad port", func() (Statement, error) { return Calls(Query{Filters: Filters{ServerPort: 70000}}, tr) }, "not a port"},
		{"bad status", func() (Statement, error) { return Calls(Query{Filters: Filters{Status: IntList{200, 42}}}, tr) }, "not an HTTP status"},
		{"bad status class", func() (Statement, error) { return Calls(Query{Filters: Filters{StatusClass: List{"5xx", "6xx"}}}, tr) }, "status class"},
		{"bad sort", func() (Statement, error) { return Calls(Query{Sort: "path; DROP TABLE agents"}, tr) }, "sort"},
		{"bad format", func() (Statement, error) { return Calls(Query{Format: "csv"}, tr) }, "format"},
		{"bad metric", func() (Statement, error) {
			return Stats(Query{Metrics: []string{"count(*)); --"}}, tr, time.Minute, Postgres)
		}, "metric"},
		{"bad group by", func() (Statement, error) {
			return Stats(Query{GroupBy: []string{"path"}}, tr, time.Minute, Postgres)
		}, "group by"},
		{"no call id", func() (Statement, error) { return CallTree(Query{}, tr) }, "a call id or a trace id is required"},
		{"bad trace id", func() (Statement, error) { return CallTree(Query{TraceID: "' OR 1=1 --"}, tr) }, "not 32 hexadecimal digits"},
		{"unknown values", func() (Statement, error) { return Values("passwords", tr) }, "values of"},
		{"bad server", func() (Statement, error) { return Calls(Query{Filters: Filters{Server: List{"10.0.0.1"}}}, tr) }, "not ip:port"},
		{"bad server port", func() (Statement, error) {
			return Calls(Query{Filters: Filters{Server: List{"10.0.0.1:99999"}}}, tr)
		}, "not ip:port"},
		{"bad tail format", func() (Statement, error) { return Tail(Query{Format: "csv"}, tr.From, 0) }, "format"},
		{"bad tail filter", func() (Statement, error) {
			return Tail(Query{Filters: Filters{Method: List{"GET"}, StatusClass: List{"9xx"}}}, tr.From, 0)
		}, "status class"},
		{"negative tail cursor", func() (Statement, error) { return Tail(Query{}, tr.From, -1) }, "negative"},
		{"bad call id", func() (Statement, error) { return Concurrent(Query{CallID: "1 OR 1=1"}, tr) }, "positive integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.build()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}

// TestValuesOnlyInArgs checks that text filters reach the statement as bind
// parameters and never as SQL text.
func TestValuesOnlyInArgs(t *testing.T) {
	evil := `x'; DROP TABLE http_calls; --`
	st, err := Calls(Query{Filters: Filters{ServerName: List{evil}, Method: List{evil}, PathPrefix: evil, PathRegex: evil, Search: evil,
		Identification: List{evil}, Template: List{evil}, TemplatePrefix: evil, TemplateRegex: evil}}, tr)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(st.SQL, "DROP") || strings.Contains(strings.ToUpper(st.SQL), "X'") {
		t.Fatalf("a filter value leaked into the SQL:\n%s", st.SQL)
	}
	n := 0
	for _, a := range st.Args {
		switch v := a.(type) {
		case string:
			if strings.Contains(strings.ToUpper(v), "DROP TABLE") {
				n++
			}
		case []string:
			if len(v) == 1 && strings.Contains(strings.ToUpper(v[0]), "DROP TABLE") {
				n++
			}
		}
	}
	if n != 9 {
		t.Fatalf("%d args carry the value, want 9: %v", n, st.Args)
	}
}

func TestParse(t *testing.T) {
	q, err := Parse([]byte(`{"refId":"A","queryType":"calls","serverIp":"10.0.0.1","serverPort":80,"minDurationMs":2.5,"metrics":["p95"],"limit":10}`))
	if err != nil {
		t.Fatal(err)
	}
	if q.QueryType != TypeCalls || len(q.ServerIP) != 1 || q.ServerIP[0] != "10.0.0.1" || q.ServerPort != 80 || *q.MinDurationMs != 2.5 || q.Limit != 10 || q.Metrics[0] != "p95" {
		t.Fatalf("Parse = %+v", q)
	}
	if _, err := Parse([]byte(`{"serverPort":"80"}`)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Parse with a string port: err = %v, want ErrInvalid", err)
	}
}

// TestParseMultiValue checks that multi-value filters take one value (as
// older queries and alert rules send it), arrays, numbers and numeric
// strings (as template variables give them), and drop empty values.
func TestParseMultiValue(t *testing.T) {
	tests := []struct {
		raw  string
		want Filters
	}{
		{`{"agentId":"a","method":"GET","status":503,"statusClass":"5xx"}`,
			Filters{AgentID: List{"a"}, Method: List{"GET"}, Status: IntList{503}, StatusClass: List{"5xx"}}},
		{`{"agentId":["a","b"],"method":["GET","POST"],"status":["404",503],"statusClass":["4xx","none"],"server":["10.0.0.2:80"]}`,
			Filters{AgentID: List{"a", "b"}, Method: List{"GET", "POST"}, Status: IntList{404, 503}, StatusClass: List{"4xx", "none"}, Server: List{"10.0.0.2:80"}}},
		{`{"serverIp":"10.0.0.1, 10.0.0.0/8,","method":["GET,POST"],"status":"404,503"}`,
			Filters{ServerIP: List{"10.0.0.1", "10.0.0.0/8"}, Method: List{"GET", "POST"}, Status: IntList{404, 503}}},
		{`{"identification":["alice","bob"],"origin":"203.0.113.7","template":"/a/{id}","templateRegex":"^/a","tokenProblem":["expired"],"multipleCredentials":false}`,
			Filters{Identification: List{"alice", "bob"}, Origin: List{"203.0.113.7"}, Template: List{"/a/{id}"}, TemplateRegex: "^/a",
				TokenProblem: List{"expired"}, MultipleCredentials: new(bool)}},
		{`{"agentId":"","method":[],"status":0,"serverIp":null,"serverName":[""," "],"identification":"","template":[]}`, Filters{}},
	}
	for _, tt := range tests {
		q, err := Parse([]byte(tt.raw))
		if err != nil {
			t.Fatalf("Parse(%s): %v", tt.raw, err)
		}
		if !reflect.DeepEqual(q.Filters, tt.want) {
			t.Errorf("Parse(%s).Filters = %+v, want %+v", tt.raw, q.Filters, tt.want)
		}
	}
	for _, raw := range []string{`{"status":"5xx"}`, `{"method":{"a":1}}`, `{"agentId":[true]}`} {
		if _, err := Parse([]byte(raw)); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%s): err = %v, want ErrInvalid", raw, err)
		}
	}
}

// The edges' whole minutes come from the 10-minute tier where they make
// whole 10-minute spans, from the minute tier around them, and all from
// the pending rows.
func TestEdgesRollupSources(t *testing.T) {
	at := func(hm string) time.Time {
		v, err := time.Parse("2006-01-02 15:04", "2026-11-20 "+hm)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		lo, hi string
		want   string
	}{
		{"10:04", "11:27", "http_edges_10m [10:10 11:20) | http_edges_1m [10:04 10:10) [11:20 11:27) | http_edges_1m_pending [10:04 11:27)"},
		{"10:00", "11:00", "http_edges_10m [10:00 11:00) | http_edges_1m_pending [10:00 11:00)"},
		{"10:00", "10:27", "http_edges_10m [10:00 10:20) | http_edges_1m [10:20 10:27) | http_edges_1m_pending [10:00 10:27)"},
		{"10:05", "10:19", "http_edges_1m [10:05 10:19) | http_edges_1m_pending [10:05 10:19)"},
		{"10:05", "10:15", "http_edges_1m [10:05 10:15) | http_edges_1m_pending [10:05 10:15)"},
	}
	for _, tt := range tests {
		var parts []string
		for _, src := range edgesRollup(at(tt.lo), at(tt.hi)) {
			part := src.table
			for _, sp := range src.spans {
				part += " [" + sp[0].Format("15:04") + " " + sp[1].Format("15:04") + ")"
			}
			parts = append(parts, part)
		}
		if got := strings.Join(parts, " | "); got != tt.want {
			t.Errorf("[%s, %s): %s\nwant %s", tt.lo, tt.hi, got, tt.want)
		}
	}
}
