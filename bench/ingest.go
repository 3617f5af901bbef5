package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

// callTimes places calls in time: call j of batch b of agent a (of
// agents) starts at base + ((b*batchSize+j)*agents+a) × 100 µs, so that
// every stored call has its own time, agents interleave, and time moves
// forward with the batches, as in a live deployment. (Resending the same
// calls would let B-tree deduplication shrink the index work.)
type callTimes struct {
	base              time.Time
	agents, batchSize int
}

func (ct callTimes) start(agent, batch, j int) time.Time {
	return ct.base.Add(time.Duration((batch*ct.batchSize+j)*ct.agents+agent) * 100 * time.Microsecond)
}

// protoCalls returns batch b of agent a: realistic calls along edges, (client
// pod, server) pairs of topo, with the header sets agents keep by default
// when headers is set.
func protoCalls(rng *rand.Rand, topo *topology, edges [][2]int, ct callTimes, a, b int, headers bool) []*orbweaverv1.HttpCall {
	methods := []string{"GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"}
	calls := make([]*orbweaverv1.HttpCall, ct.batchSize)
	for i := range calls {
		e := edges[rng.IntN(len(edges))]
		client, server := topo.clients[e[0]], e[1]
		start := ct.start(a, b, i).UnixNano()
		dur := int64(math.Exp(rng.NormFloat64()*1.0+math.Log(20)) * 1e6) // lognormal, median 20 ms
		status := uint32(200)
		switch p := rng.IntN(100); {
		case p < 3:
			status = 404
		case p < 5:
			status = 500
		case p < 8:
			status = 201
		}
		calls[i] = &orbweaverv1.HttpCall{
			ClientIp: client.AsSlice(), ClientPort: uint32(30000 + rng.IntN(30000)),
			ServerIp: topo.servers[server].AsSlice(), ServerPort: 8080,
			RequestStartNs: start, RequestEndNs: start + 50_000, ResponseStartNs: start + dur - 100_000, ResponseEndNs: start + dur,
			Method: methods[rng.IntN(len(methods))], Host: fmt.Sprintf("svc-%02d.default.svc:8080", server),
			Path: fmt.Sprintf("/api/v1/res%d/%d", rng.IntN(200), rng.IntN(100000)), Query: "limit=20",
			HttpVersion: "1.1", Status: status, RequestHeaderSize: 412, ResponseHeaderSize: 230,
			ResponseBodySize: int64(20 + rng.IntN(8000)), ResponseContentType: "application/json",
			UserAgent: "Go-http-client/1.1", XRequestId: uuid.NewString(),
			Traceparent: fmt.Sprintf("00-%016x%016x-%016x-01", rng.Uint64(), rng.Uint64(), rng.Uint64()),
			ParseStatus: "ok", Template: fmt.Sprintf("/api/v1/res%d/{id}", rng.IntN(200)),
		}
		if headers {
			// Headers of agentconfig's default parsing.headers_keep, as
			// an HTTP client library and a JSON API send them.
			calls[i].RequestHeaders = fmt.Sprintf(`{"accept":"application/json","accept-encoding":"gzip","x-correlation-id":"%016x"}`, rng.Uint64())
			calls[i].ResponseHeaders = `{"cache-control":"no-store","content-encoding":"gzip"}`
		}
	}
	return calls
}

// rawColumns returns the http_calls columns the raw ceiling writes: every
// column the calls above carry (the store's other columns stay NULL).
func rawColumns() []string {
	return []string{
		"time", "agent_id", "client_ip", "client_port", "server_ip", "server_port",
		"method", "host", "path", "query", "http_version", "status", "duration_us",
		"request_start", "request_end", "response_start", "response_end",
		"request_header_size", "request_body_size", "response_header_size", "response_body_size",
		"request_content_type", "response_content_type", "user_agent", "x_forwarded_for",
		"x_request_id", "traceparent", "parse_status", "template",
		"request_headers", "response_headers",
	}
}

// rawRows converts calls into rows of rawColumns, as the store would,
// shifted by 50 µs so that they do not repeat the controller path's times.
// The agent id is a pgtype.UUID: pgx encodes it directly, whereas a
// uuid.UUID goes through driver.Valuer, a failed binary encode and a text
// re-parse. Header sets are pgx's jsonb from a string (NULL when absent).
func rawRows(id uuid.UUID, calls []*orbweaverv1.HttpCall) [][]any {
	agentID := pgtype.UUID{Bytes: id, Valid: true}
	rows := make([][]any, len(calls))
	const shift = 50_000
	ts := func(ns int64) time.Time { return time.Unix(0, (ns+shift)/1000*1000) }
	headers := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	for i, c := range calls {
		cip, _ := netip.AddrFromSlice(c.GetClientIp())
		sip, _ := netip.AddrFromSlice(c.GetServerIp())
		rows[i] = []any{
			ts(c.GetRequestStartNs()), agentID, cip, int32(c.GetClientPort()), sip, int32(c.GetServerPort()),
			c.GetMethod(), c.GetHost(), c.GetPath(), c.GetQuery(), c.GetHttpVersion(), int16(c.GetStatus()),
			(c.GetResponseEndNs() - c.GetRequestStartNs()) / 1000,
			ts(c.GetRequestStartNs()), ts(c.GetRequestEndNs()), ts(c.GetResponseStartNs()), ts(c.GetResponseEndNs()),
			int32(c.GetRequestHeaderSize()), c.GetRequestBodySize(), int32(c.GetResponseHeaderSize()), c.GetResponseBodySize(),
			c.GetRequestContentType(), c.GetResponseContentType(), c.GetUserAgent(), c.GetXForwardedFor(),
			c.GetXRequestId(), c.GetTraceparent(), c.GetParseStatus(), c.GetTemplate(),
			headers(c.GetRequestHeaders()), headers(c.GetResponseHeaders()),
		}
	}
	return rows
}

// ingestResult is one run of simulated agents.
type ingestResult struct {
	calls   int64
	elapsed time.Duration
	acks    []time.Duration
	errors  int
}

// runAgents streams batches of calls from len(callSets) simulated agents
// (callSets[a][b] is batch b of agent a) over real gRPC streams, at most 8
// unacknowledged batches each (the uplink's default), and waits for every
// acknowledgement.
func runAgents(ctx context.Context, addr string, callSets [][][]*orbweaverv1.HttpCall) (ingestResult, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return ingestResult{}, fmt.Errorf("dial controller: %w", err)
	}
	defer conn.Close()
	client := orbweaverv1.NewAgentServiceClient(conn)
	var (
		mu  sync.Mutex
		res ingestResult
	)
	type agentStream struct {
		stream      orbweaverv1.AgentService_ConnectClient
		agent, boot string
		batches     [][]*orbweaverv1.HttpCall
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	streams := make([]agentStream, len(callSets))
	for i := range streams {
		st, err := client.Connect(sctx)
		if err != nil {
			return res, fmt.Errorf("connect: %w", err)
		}
		a := agentStream{stream: st, agent: uuid.NewString(), boot: uuid.NewString(), batches: callSets[i]}
		hello := &orbweaverv1.Hello{AgentId: a.agent, BootId: a.boot, Name: fmt.Sprintf("bench-ingest-%d", i), Version: "bench"}
		if err := st.Send(&orbweaverv1.AgentMessage{Msg: &orbweaverv1.AgentMessage_Hello{Hello: hello}}); err != nil {
			return res, fmt.Errorf("send hello: %w", err)
		}
		for {
			m, err := st.Recv()
			if err != nil {
				return res, fmt.Errorf("await welcome: %w", err)
			}
			if m.GetWelcome() != nil {
				break
			}
		}
		streams[i] = a
	}
	start := time.Now()
	g, gctx := errgroup.WithContext(sctx)
	for _, a := range streams {
		batches := len(a.batches)
		window := make(chan struct{}, 8)
		sent := make([]time.Time, batches+1)
		var smu sync.Mutex
		g.Go(func() error {
			for acked := 0; acked < batches; {
				m, err := a.stream.Recv()
				if err != nil {
					return fmt.Errorf("receive ack: %w", err)
				}
				ack := m.GetBatchAck()
				if ack == nil {
					continue
				}
				now := time.Now()
				smu.Lock()
				lat := now.Sub(sent[ack.GetSequence()])
				smu.Unlock()
				mu.Lock()
				res.acks = append(res.acks, lat)
				if ack.GetError() != "" {
					res.errors++
				} else {
					res.calls += int64(len(a.batches[ack.GetSequence()-1]))
				}
				mu.Unlock()
				acked++
				<-window
			}
			return nil
		})
		g.Go(func() error {
			for seq := 1; seq <= batches; seq++ {
				select {
				case window <- struct{}{}:
				case <-gctx.Done():
					return gctx.Err()
				}
				smu.Lock()
				sent[seq] = time.Now()
				smu.Unlock()
				b := &orbweaverv1.CallBatch{AgentId: a.agent, BootId: a.boot, Sequence: uint64(seq), HttpCalls: a.batches[seq-1]}
				if err := a.stream.Send(&orbweaverv1.AgentMessage{Msg: &orbweaverv1.AgentMessage_CallBatch{CallBatch: b}}); err != nil {
					return fmt.Errorf("send batch: %w", err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return res, err
	}
	res.elapsed = time.Since(start)
	for _, a := range streams {
		_ = a.stream.CloseSend()
	}
	return res, nil
}

// runRaw writes the same rows with plain CopyFrom, one writer per agent,
// one COPY per batch (rowSets[a][b] is batch b of agent a).
func runRaw(ctx context.Context, pool *pgxpool.Pool, rowSets [][][][]any) (int64, time.Duration, error) {
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	var mu sync.Mutex
	var total int64
	for _, rows := range rowSets {
		g.Go(func() error {
			for _, batch := range rows {
				n, err := pool.CopyFrom(gctx, pgx.Identifier{"http_calls"}, rawColumns(), pgx.CopyFromRows(batch))
				if err != nil {
					return fmt.Errorf("copy: %w", err)
				}
				mu.Lock()
				total += n
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return total, 0, err
	}
	return total, time.Since(start), nil
}

// ingestSets returns the calls of one run for the controller path and, as
// rows, for the raw path (each raw writer with an agent id of its own).
func ingestSets(rng *rand.Rand, ct callTimes, batches int, headers bool) ([][][]*orbweaverv1.HttpCall, [][][][]any) {
	callSets := make([][][]*orbweaverv1.HttpCall, ct.agents)
	rowSets := make([][][][]any, ct.agents)
	topo := newTopology()
	for a := range callSets {
		// Agent a runs on the hosts of servers a, a+agents, … and sees
		// the calls to them (all calls when it has no server).
		edges := topo.clientEdges(func(server int) bool { return server%ct.agents == a })
		if len(edges) == 0 {
			edges = topo.clientEdges(func(int) bool { return true })
		}
		rawAgent := uuid.New()
		for b := range batches {
			calls := protoCalls(rng, topo, edges, ct, a, b, headers)
			callSets[a] = append(callSets[a], calls)
			rowSets[a] = append(rowSets[a], rawRows(rawAgent, calls))
		}
	}
	return callSets, rowSets
}

// postgresCPU returns the CPU time used so far by the cluster's server
// processes: the postmaster, its live children and the children it has
// reaped (autovacuum workers, ended sessions).
func postgresCPU(dataDir string) (time.Duration, error) {
	raw, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(raw), "\n")
	postmaster, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return 0, fmt.Errorf("postmaster.pid: %w", err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var ticks int64
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + ent.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		st := string(b)
		f := strings.Fields(st[strings.LastIndexByte(st, ')')+1:])
		if len(f) < 15 {
			continue
		}
		// f[1] is the parent pid; f[11..14] utime, stime, cutime, cstime.
		if ppid, _ := strconv.Atoi(f[1]); pid != postmaster && ppid != postmaster {
			continue
		}
		last := 12
		if pid == postmaster {
			last = 14
		}
		for _, v := range f[11 : last+1] {
			n, _ := strconv.ParseInt(v, 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// benchIngest is section 3.
func benchIngest(ctx context.Context, e *env, rep *report) error {
	const sec = "3 ingest"
	addr, _, err := e.controller(ctx)
	if err != nil {
		return err
	}
	s := e.cfg.sizes
	cluster, err := e.database(ctx)
	if err != nil {
		return err
	}
	pcfg, err := pgxpool.ParseConfig(cluster.URL())
	if err != nil {
		return fmt.Errorf("pool config: %w", err)
	}
	pcfg.MaxConns = int32(max(s.IngestAgents, 4))
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer pool.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	ct := callTimes{base: time.Now(), agents: s.IngestAgents, batchSize: e.cfg.ingestBatchSize}
	span := ct.start(0, s.IngestBatches, 0).Sub(ct.base) // of one run's calls
	// Every run's calls in the past, ending a minute ago, as captured calls
	// are: calls in the future would sit in the time range of the later
	// sections' queries (e2e polls the calls stored since it started, and
	// scanned 1.5M of these when they ran up to two minutes ahead).
	ct.base = ct.base.Add(-time.Duration(e.cfg.runs)*span - time.Minute)
	// measure runs one path and returns the CPU time Postgres and this
	// process (simulated agents, controller or raw writers) spent on it.
	measure := func(f func() error) (pgCPU, selfCPU time.Duration, err error) {
		pg0, err := postgresCPU(cluster.DataDir())
		if err != nil {
			return 0, 0, err
		}
		self0, err := procCPU(os.Getpid())
		if err != nil {
			return 0, 0, err
		}
		if err := f(); err != nil {
			return 0, 0, err
		}
		pg1, err := postgresCPU(cluster.DataDir())
		if err != nil {
			return 0, 0, err
		}
		self1, err := procCPU(os.Getpid())
		return pg1 - pg0, self1 - self0, err
	}
	var ours, raw, ratio, p50, p99, errs, pgOurs, pgRaw, foldMs, foldRows []float64
	for run := range e.cfg.runs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		callSets, rowSets := ingestSets(rng, ct, s.IngestBatches, e.cfg.ingestHeaders)
		ct.base = ct.base.Add(span) // the next run's calls come later
		var (
			r                   ingestResult
			rawN                int64
			rawElapsed          time.Duration
			pgOursCPU, pgRawCPU time.Duration
			meOursCPU, meRawCPU time.Duration
		)
		runOurs := func() (err error) {
			pgOursCPU, meOursCPU, err = measure(func() (err error) {
				r, err = runAgents(ctx, addr, callSets)
				return err
			})
			return err
		}
		runRawPath := func() (err error) {
			pgRawCPU, meRawCPU, err = measure(func() (err error) {
				rawN, rawElapsed, err = runRaw(ctx, pool, rowSets)
				return err
			})
			return err
		}
		// Alternate the order so that table growth favours neither.
		first, second := runRawPath, runOurs
		if run%2 == 1 {
			first, second = runOurs, runRawPath
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
		// The service map edges the controller path left pending (it
		// folds them every 2 s), folded now.
		foldStart := time.Now()
		var pending int64
		if err := pool.QueryRow(ctx, "SELECT http_edges_fold()").Scan(&pending); err != nil {
			return fmt.Errorf("fold edges: %w", err)
		}
		foldMs = append(foldMs, float64(time.Since(foldStart).Microseconds())/1000)
		foldRows = append(foldRows, float64(pending))
		o := float64(r.calls) / r.elapsed.Seconds()
		c := float64(rawN) / rawElapsed.Seconds()
		perCall := func(d time.Duration, n int64) float64 { return float64(d.Microseconds()) / float64(n) }
		po, pr := perCall(pgOursCPU, r.calls), perCall(pgRawCPU, rawN)
		e.logf("ingest run %d: controller %.0f calls/s (%d calls, %s; CPU µs/call: Postgres %.1f, agents+controller %.1f), "+
			"raw CopyFrom %.0f rows/s (CPU µs/row: Postgres %.1f, writers %.1f)",
			run+1, o, r.calls, r.elapsed.Round(time.Millisecond), po, perCall(meOursCPU, r.calls), c, pr, perCall(meRawCPU, rawN))
		ours = append(ours, o)
		raw = append(raw, c)
		ratio = append(ratio, 100*o/c)
		p50 = append(p50, percentileMs(r.acks, 50))
		p99 = append(p99, percentileMs(r.acks, 99))
		errs = append(errs, float64(r.errors))
		pgOurs = append(pgOurs, po)
		pgRaw = append(pgRaw, pr)
	}
	headers := "no header sets"
	if e.cfg.ingestHeaders {
		headers = "request and response header sets"
	}
	in := fmt.Sprintf("%d agents × %d batches × %d calls (%s), ≤8 batches in flight per agent", s.IngestAgents, s.IngestBatches, ct.batchSize, headers)
	rep.add(sec, "controller committed calls/s", "calls/s", ours, atLeast(150_000), in)
	rep.add(sec, "raw pgx CopyFrom ceiling", "rows/s", raw, nil, fmt.Sprintf("%d writers, a COPY per batch, same rows, same table and indexes", s.IngestAgents))
	rep.add(sec, "controller / raw ceiling (same run)", "%", ratio, atLeast(70), "")
	rep.add(sec, "batch ack latency p50", "ms", p50, nil, "send → ack, includes queueing behind the window")
	rep.add(sec, "batch ack latency p99", "ms", p99, nil, "")
	rep.add(sec, "batches acked with an error", "count", errs, below(1), "")
	rep.add(sec, "Postgres CPU per call, controller path", "µs", pgOurs, nil, "all server processes; less sensitive to a shared machine than rates")
	rep.add(sec, "Postgres CPU per row, raw CopyFrom", "µs", pgRaw, nil, "")
	rep.add(sec, "service map edges pending after a run", "rows", foldRows, nil, "appended by the ingest transactions, folded by the controller every 2 s")
	rep.add(sec, "folding them into the edge rollups", "ms", foldMs, nil, "one statement (http_edges_fold)")
	return nil
}
