package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/orbweaver/orbweaver/controller/store"
	qb "github.com/orbweaver/orbweaver/grafana-plugin/pkg/querybuilder"
)

// queryColumns returns the http_calls columns the generator fills.
func queryColumns() []string {
	return []string{
		"time", "agent_id", "client_ip", "client_port", "server_ip", "server_port",
		"method", "host", "path", "query", "http_version", "status", "duration_us",
		"request_start", "request_end", "response_start", "response_end",
		"request_header_size", "request_body_size", "response_header_size", "response_body_size",
		"response_content_type", "user_agent", "x_request_id", "traceparent", "parse_status", "template",
	}
}

// callGen is a pgx.CopyFromSource of realistic calls: the mesh of
// topology (50 servers, each with its agent; 500 client pods; 30% of the
// calls between servers), 200 route templates with a skewed
// popularity, GET-heavy methods, mostly 2xx, log-normal durations, start
// times spread evenly over [from, from+span) in increasing order (with a
// second of jitter), as calls arrive in production, so that the table is
// clustered by time as a real one is. 5% of the calls start a trace: the
// called server then calls 2–3 others inside the root's time span, with the
// same trace id (the call tree's shape).
type callGen struct {
	rng      *rand.Rand
	n, left  int
	from     time.Time
	span     time.Duration
	topo     *topology
	servers  []netip.Addr
	agents   []pgtype.UUID
	hosts    []string
	tmpls    []string
	prefixes []string
	pending  [][]any
	row      []any
}

func newCallGen(seed uint64, n int, from time.Time, span time.Duration) *callGen {
	g := &callGen{rng: rand.New(rand.NewPCG(seed, 99)), n: n, left: n, from: from, span: span, topo: newTopology()}
	g.servers = g.topo.servers
	for i := range g.servers {
		g.agents = append(g.agents, pgtype.UUID{Bytes: uuid.NewSHA1(uuid.NameSpaceOID, []byte{byte(i)}), Valid: true})
		g.hosts = append(g.hosts, fmt.Sprintf("svc-%02d.default.svc:8080", i))
	}
	resources := []string{"users", "orders", "items", "payments", "sessions", "carts", "search", "reviews", "invoices", "shipments"}
	for i := range 200 {
		p := fmt.Sprintf("/api/v%d/%s%d", 1+i%2, resources[i%len(resources)], i/len(resources))
		g.prefixes = append(g.prefixes, p)
		g.tmpls = append(g.tmpls, p+"/{id}")
	}
	return g
}

// call builds one row; client < 0 picks a random external client.
func (g *callGen) call(client netip.Addr, server int, start time.Time, dur time.Duration, trace string) []any {
	r := g.rng
	t := int(math.Min(float64(len(g.tmpls)-1), r.ExpFloat64()*30)) // skewed popularity
	method := "GET"
	switch p := r.IntN(100); {
	case p < 20:
		method = "POST"
	case p < 25:
		method = "PUT"
	case p < 30:
		method = "DELETE"
	}
	var status any = int16(200)
	parse := "ok"
	switch p := r.IntN(1000); {
	case p < 10:
		status, parse = nil, "no_response"
	case p < 30:
		status = int16(500)
	case p < 40:
		status = int16(503)
	case p < 80:
		status = int16(404)
	case p < 100:
		status = int16(400)
	case p < 150 && method == "POST":
		status = int16(201)
	}
	reqStart := start.Truncate(time.Microsecond)
	var respStart, respEnd, durUS any
	if status != nil {
		respStart = reqStart.Add(dur * 9 / 10)
		respEnd = reqStart.Add(dur)
		durUS = int64(dur / time.Microsecond)
	}
	var xid any
	if r.IntN(2) == 0 {
		xid = strconv.FormatUint(r.Uint64(), 16)
	}
	var tp any
	if trace != "" {
		tp = "00-" + trace + "-" + fmt.Sprintf("%016x", r.Uint64()) + "-01"
	}
	return []any{
		reqStart, g.agents[server], client, int32(30000 + r.IntN(30000)), g.servers[server], int32(8080),
		method, g.hosts[server], g.prefixes[t] + "/" + strconv.Itoa(r.IntN(100000)), "", "1.1", status, durUS,
		reqStart, reqStart.Add(50 * time.Microsecond), respStart, respEnd,
		int32(300 + r.IntN(400)), int64(0), int32(200 + r.IntN(100)), int64(20 + r.IntN(20000)),
		"application/json", "Go-http-client/1.1", xid, tp, parse, g.tmpls[t],
	}
}

func (g *callGen) duration() time.Duration {
	return time.Duration(math.Exp(g.rng.NormFloat64()*0.9+math.Log(15)) * float64(time.Millisecond))
}

// Next implements pgx.CopyFromSource.
func (g *callGen) Next() bool {
	if len(g.pending) > 0 {
		g.row, g.pending = g.pending[0], g.pending[1:]
		return true
	}
	if g.left <= 0 {
		return false
	}
	r := g.rng
	done := float64(g.n-g.left) / float64(g.n)
	start := g.from.Add(time.Duration(done*float64(g.span)) + time.Duration(r.Int64N(int64(time.Second))))
	var (
		client netip.Addr
		server int
	)
	if r.IntN(10) < 3 {
		caller := r.IntN(len(g.servers)) // service-to-service
		client, server = g.servers[caller], g.topo.serverCall(r, caller)
	} else {
		client, server = g.topo.clientCall(r)
	}
	if r.IntN(100) < 5 && g.left >= 4 {
		// A trace: the root and 2–3 nested calls made by its server.
		trace := fmt.Sprintf("7eee%012x%016x", r.Uint64()>>16, r.Uint64()) // 7eee: a tree trace, found by benchQueries
		dur := 20*time.Millisecond + g.duration()
		g.row = g.call(client, server, start, dur, trace)
		if g.row[11] == nil {
			g.row[11], g.row[12], g.row[15], g.row[16], g.row[25] = int16(200), int64(dur/time.Microsecond), start.Truncate(time.Microsecond).Add(dur*9/10), start.Truncate(time.Microsecond).Add(dur), "ok"
		}
		g.left--
		for k := range 2 + r.IntN(2) {
			cs := start.Add(dur * time.Duration(1+2*k) / 10)
			child := g.call(g.servers[server], g.topo.serverCall(r, server), cs, dur/8, trace)
			if child[11] == nil { // children answered, so they nest
				child[11], child[12], child[15], child[16], child[25] = int16(200), int64(dur/8/time.Microsecond), cs.Truncate(time.Microsecond).Add(dur/10), cs.Truncate(time.Microsecond).Add(dur/8), "ok"
			}
			g.pending = append(g.pending, child)
			g.left--
		}
		return true
	}
	var trace string
	if r.IntN(100) < 20 {
		trace = fmt.Sprintf("0%015x%016x", r.Uint64()>>4, r.Uint64())
	}
	g.row = g.call(client, server, start, g.duration(), trace)
	g.left--
	return true
}

// Values implements pgx.CopyFromSource.
func (g *callGen) Values() ([]any, error) { return g.row, nil }

// Err implements pgx.CopyFromSource.
func (g *callGen) Err() error { return nil }

// namedQuery is a plugin query to time.
type namedQuery struct {
	name   string
	window time.Duration
	build  func(tr qb.TimeRange) (qb.Statement, error)
	// then, when set, builds a follow-up statement from the first one's
	// rows (the service map's nodes from its edges).
	then func(tr qb.TimeRange, rows [][]any) (qb.Statement, error)
}

func parseQuery(js string) qb.Query {
	q, err := qb.Parse([]byte(js))
	if err != nil {
		panic(fmt.Sprintf("bench query %s: %v", js, err)) // a bug in the bench
	}
	return q
}

func plugQueries(rootID int64) []namedQuery {
	calls := parseQuery(`{"queryType":"calls"}`)
	filtered := parseQuery(`{"queryType":"calls","server":"10.10.0.7:8080","method":"GET","statusClass":"5xx"}`)
	prefix := parseQuery(`{"queryType":"calls","pathPrefix":"/api/v1/users0","minDurationMs":50}`)
	stats := parseQuery(`{"queryType":"stats","metrics":["rate","error_rate","p95"],"groupBy":["server"]}`)
	smap := parseQuery(`{"queryType":"serviceMap"}`)
	tree := parseQuery(fmt.Sprintf(`{"queryType":"callTree","callId":"%d"}`, rootID))
	return []namedQuery{
		{name: "calls page 1h", window: time.Hour, build: func(tr qb.TimeRange) (qb.Statement, error) { return qb.Calls(calls, tr) }},
		{name: "calls page 1h, server+GET+5xx", window: time.Hour, build: func(tr qb.TimeRange) (qb.Statement, error) { return qb.Calls(filtered, tr) }},
		{name: "calls page 1h, path prefix+min duration", window: time.Hour, build: func(tr qb.TimeRange) (qb.Statement, error) { return qb.Calls(prefix, tr) }},
		{name: "stats 1h by server (rate, errors, p95; 1 min)", window: time.Hour, build: func(tr qb.TimeRange) (qb.Statement, error) {
			return qb.Stats(stats, tr, time.Minute, qb.Postgres)
		}},
		{name: "stats 24h by server (rate, errors, p95; 5 min)", window: 24 * time.Hour, build: func(tr qb.TimeRange) (qb.Statement, error) {
			return qb.Stats(stats, tr, 5*time.Minute, qb.Postgres)
		}},
		{name: "service map 1h (edges + nodes)", window: time.Hour,
			build: func(tr qb.TimeRange) (qb.Statement, error) { return qb.ServiceMapEdges(smap, tr) },
			then: func(tr qb.TimeRange, rows [][]any) (qb.Statement, error) {
				seen := map[string]bool{}
				var ips []string
				for _, r := range rows {
					for _, v := range r[:2] {
						if s, ok := v.(string); ok && !seen[s] {
							seen[s] = true
							ips = append(ips, s)
						}
					}
				}
				return qb.ServiceMapNodes(smap, tr, ips)
			}},
		{name: "call tree 1h (by call id)", window: time.Hour, build: func(tr qb.TimeRange) (qb.Statement, error) { return qb.CallTree(tree, tr) }},
	}
}

// execute runs a statement and reads every row; it returns the rows when
// keep is set. Like the plugin, it computes the percentiles of a statement
// that reads the rollups from its histogram column.
func execute(ctx context.Context, pool *pgxpool.Pool, st qb.Statement, keep bool) ([][]any, int, error) {
	rows, err := pool.Query(ctx, st.SQL, st.Args...)
	if err != nil {
		return nil, 0, fmt.Errorf("query: %w", err)
	}
	defer rows.Close()
	hist := -1
	if len(st.Percentiles) > 0 {
		for i, fd := range rows.FieldDescriptions() {
			if fd.Name == qb.HistogramColumn {
				hist = i
			}
		}
		if hist < 0 {
			return nil, 0, fmt.Errorf("query: no column %s", qb.HistogramColumn)
		}
	}
	var out [][]any
	n := 0
	for rows.Next() {
		n++
		var h []int32
		if hist >= 0 {
			dests := make([]any, len(rows.FieldDescriptions()))
			for i := range dests {
				dests[i] = new(any)
			}
			dests[hist] = &h
			if err := rows.Scan(dests...); err != nil {
				return nil, n, fmt.Errorf("query: %w", err)
			}
			st.FinishPercentiles(h)
		}
		if keep {
			v, err := rows.Values()
			if err != nil {
				return nil, n, fmt.Errorf("query: %w", err)
			}
			out = append(out, v)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, n, fmt.Errorf("query: %w", err)
	}
	return out, n, nil
}

// benchQueries is section 5.
func benchQueries(ctx context.Context, e *env, rep *report) error {
	const sec = "5 queries"
	cluster, err := e.database(ctx)
	if err != nil {
		return err
	}
	s := e.cfg.sizes
	admin, err := pgx.Connect(ctx, cluster.URL())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE bench_queries")
	admin.Close(ctx)
	if err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	url := cluster.URLFor("bench_queries")
	st, err := store.Open(ctx, url, nil) // migrations and partitions
	if err != nil {
		return err
	}
	defer st.Close()
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("pool config: %w", err)
	}
	pcfg.MaxConns = 4
	pcfg.ConnConfig.RuntimeParams["jit"] = "off" // as the plugin's sessions (models.Settings.ConnString)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer pool.Close()

	now := time.Now()
	from := now.Add(-24 * time.Hour)
	start := time.Now()
	const loaders = 2
	g, gctx := errgroup.WithContext(ctx)
	for i := range loaders {
		n := s.QueryRows / loaders
		if i == 0 {
			n += s.QueryRows % loaders
		}
		g.Go(func() error {
			// Each loader fills its own part of the day, in time order.
			part := 24 * time.Hour / loaders
			gen := newCallGen(uint64(i+1), n, from.Add(time.Duration(i)*part), part-time.Second)
			_, err := pool.CopyFrom(gctx, pgx.Identifier{"http_calls"}, queryColumns(), gen)
			if err != nil {
				return fmt.Errorf("load calls: %w", err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	load := time.Since(start)
	if _, err := pool.Exec(ctx, "VACUUM (ANALYZE) http_calls"); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	e.logf("queries: %d calls loaded in %s (%.0f rows/s), vacuumed in %s", s.QueryRows, load.Round(time.Millisecond),
		float64(s.QueryRows)/load.Seconds(), (time.Since(start) - load).Round(time.Millisecond))
	// The load bypassed the store: build the per-minute rollups the store
	// keeps at ingest, as after a migration on existing calls.
	start = time.Now()
	rollupRows, err := st.RebuildRollups(ctx, from, now.Add(time.Minute))
	if err != nil {
		return err
	}
	rollup := time.Since(start)
	if _, err := pool.Exec(ctx, "ANALYZE http_calls_1m, http_edges_1m"); err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	e.logf("queries: rollups of %d calls built in %s (%d rows, %.0f calls/s)", s.QueryRows, rollup.Round(time.Millisecond),
		rollupRows, float64(s.QueryRows)/rollup.Seconds())

	var rootID int64
	err = pool.QueryRow(ctx, `SELECT id FROM http_calls WHERE time >= $1 AND time < $2 AND traceparent LIKE '00-7eee%'
		AND client_ip << '10.20.0.0/16' ORDER BY time LIMIT 1`, now.Add(-50*time.Minute), now).Scan(&rootID)
	if err != nil {
		return fmt.Errorf("pick a call tree root: %w", err)
	}
	queries := plugQueries(rootID)
	type stat struct{ p50, p95, rows []float64 }
	stats := make([]stat, len(queries))
	for run := range e.cfg.runs {
		for qi, q := range queries {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			reps := s.QueryReps
			if q.window > time.Hour {
				reps = min(3, reps) // seconds each at full size
			}
			warm := -1 // one warm-up repetition, in the first run only
			if run > 0 {
				warm = 0
			}
			tr := qb.TimeRange{From: now.Add(-q.window), To: now}
			if e.cfg.explain && run == 0 {
				if err := explain(ctx, e, pool, q, tr); err != nil {
					return err
				}
			}
			var lats []time.Duration
			var nrows int
			for rep := warm; rep < reps; rep++ {
				t0 := time.Now()
				stmt, err := q.build(tr)
				if err != nil {
					return fmt.Errorf("%s: build: %w", q.name, err)
				}
				rows, n, err := execute(ctx, pool, stmt, q.then != nil)
				if err != nil {
					return fmt.Errorf("%s: %w", q.name, err)
				}
				nrows = n
				if q.then != nil {
					stmt2, err := q.then(tr, rows)
					if err != nil {
						return fmt.Errorf("%s: build: %w", q.name, err)
					}
					if _, _, err := execute(ctx, pool, stmt2, false); err != nil {
						return fmt.Errorf("%s: %w", q.name, err)
					}
				}
				if rep >= 0 {
					lats = append(lats, time.Since(t0))
				}
			}
			stats[qi].p50 = append(stats[qi].p50, percentileMs(lats, 50))
			stats[qi].p95 = append(stats[qi].p95, percentileMs(lats, 95))
			stats[qi].rows = append(stats[qi].rows, float64(nrows))
			e.logf("queries run %d: %s: p50 %.1f ms, p95 %.1f ms, %d rows", run+1, q.name, percentileMs(lats, 50), percentileMs(lats, 95), nrows)
		}
	}
	rep.add(sec, "calls stored (generated, COPY)", "calls", []float64{float64(s.QueryRows)}, nil,
		fmt.Sprintf("over the last 24 h, in time order; loaded at %.0f rows/s with 2 connections, all indexes", float64(s.QueryRows)/load.Seconds()))
	rep.add(sec, "rollups built from the calls (RebuildRollups)", "s", []float64{rollup.Seconds()}, nil,
		fmt.Sprintf("%d rows of http_calls_1m and http_edges_1m, one statement each; %.0f calls/s", rollupRows, float64(s.QueryRows)/rollup.Seconds()))
	for qi, q := range queries {
		var t *target
		if q.window == time.Hour {
			t = below(150)
		}
		rep.add(sec, q.name+" p50", "ms", stats[qi].p50, nil, fmt.Sprintf("%.0f rows returned", median(stats[qi].rows)))
		rep.add(sec, q.name+" p95", "ms", stats[qi].p95, t, "")
	}
	return nil
}

// explain logs the plan and timing of q's first statement.
func explain(ctx context.Context, e *env, pool *pgxpool.Pool, q namedQuery, tr qb.TimeRange) error {
	st, err := q.build(tr)
	if err != nil {
		return fmt.Errorf("%s: build: %w", q.name, err)
	}
	plan, err := explainPlan(ctx, pool, st.SQL, st.Args...)
	if err != nil {
		return fmt.Errorf("%s: %w", q.name, err)
	}
	e.logf("queries: EXPLAIN %s:%s", q.name, plan)
	return nil
}

// explainPlan returns EXPLAIN (ANALYZE, BUFFERS) of sql, a line per plan
// line, each indented for the log. args may start with a pgx query mode.
func explainPlan(ctx context.Context, pool *pgxpool.Pool, sql string, args ...any) (string, error) {
	rows, err := pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+sql, args...)
	if err != nil {
		return "", fmt.Errorf("explain: %w", err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return "", fmt.Errorf("explain: %w", err)
		}
		b.WriteString("\n    " + line)
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("explain: %w", err)
	}
	return b.String(), nil
}
