package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
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

const ingestBatchSize = 1000

// protoCalls returns n realistic calls starting around base.
func protoCalls(rng *rand.Rand, n int, base time.Time) []*orbweaverv1.HttpCall {
	methods := []string{"GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"}
	calls := make([]*orbweaverv1.HttpCall, n)
	for i := range calls {
		server := rng.IntN(50)
		start := base.Add(time.Duration(i) * time.Millisecond).UnixNano()
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
			ClientIp: []byte{10, 20, byte(rng.IntN(2)), byte(1 + rng.IntN(250))}, ClientPort: uint32(30000 + rng.IntN(30000)),
			ServerIp: []byte{10, 10, 0, byte(1 + server)}, ServerPort: 8080,
			RequestStartNs: start, RequestEndNs: start + 50_000, ResponseStartNs: start + dur - 100_000, ResponseEndNs: start + dur,
			Method: methods[rng.IntN(len(methods))], Host: fmt.Sprintf("svc-%02d.default.svc:8080", server),
			Path: fmt.Sprintf("/api/v1/res%d/%d", rng.IntN(200), rng.IntN(100000)), Query: "limit=20",
			HttpVersion: "1.1", Status: status, RequestHeaderSize: 412, ResponseHeaderSize: 230,
			ResponseBodySize: int64(20 + rng.IntN(8000)), ResponseContentType: "application/json",
			UserAgent: "Go-http-client/1.1", XRequestId: uuid.NewString(),
			Traceparent: fmt.Sprintf("00-%016x%016x-%016x-01", rng.Uint64(), rng.Uint64(), rng.Uint64()),
			ParseStatus: "ok", Template: fmt.Sprintf("/api/v1/res%d/{id}", rng.IntN(200)),
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
	}
}

// rawRows converts calls into rows of rawColumns, as the store would. The
// agent id is a pgtype.UUID: pgx encodes it directly, whereas a uuid.UUID
// goes through driver.Valuer, a failed binary encode and a text re-parse.
func rawRows(id uuid.UUID, calls []*orbweaverv1.HttpCall) [][]any {
	agentID := pgtype.UUID{Bytes: id, Valid: true}
	rows := make([][]any, len(calls))
	ts := func(ns int64) time.Time { return time.Unix(0, ns/1000*1000) }
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
// over real gRPC streams, at most 8 unacknowledged batches each (the
// uplink's default), and waits for every acknowledgement.
func runAgents(ctx context.Context, addr string, callSets [][]*orbweaverv1.HttpCall, batches int) (ingestResult, error) {
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
		calls       []*orbweaverv1.HttpCall
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	streams := make([]agentStream, len(callSets))
	for i := range streams {
		st, err := client.Connect(sctx)
		if err != nil {
			return res, fmt.Errorf("connect: %w", err)
		}
		a := agentStream{stream: st, agent: uuid.NewString(), boot: uuid.NewString(), calls: callSets[i]}
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
					res.calls += int64(len(a.calls))
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
				b := &orbweaverv1.CallBatch{AgentId: a.agent, BootId: a.boot, Sequence: uint64(seq), HttpCalls: a.calls}
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

// runRaw writes the same rows with plain CopyFrom, one writer per agent.
func runRaw(ctx context.Context, pool *pgxpool.Pool, rowSets [][][]any, batches int) (int64, time.Duration, error) {
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	var mu sync.Mutex
	var total int64
	for _, rows := range rowSets {
		g.Go(func() error {
			for range batches {
				n, err := pool.CopyFrom(gctx, pgx.Identifier{"http_calls"}, rawColumns(), pgx.CopyFromRows(rows))
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
	callSets := make([][]*orbweaverv1.HttpCall, s.IngestAgents)
	rowSets := make([][][]any, s.IngestAgents)
	rawAgent := uuid.New()
	for i := range callSets {
		callSets[i] = protoCalls(rng, ingestBatchSize, time.Now())
		rowSets[i] = rawRows(rawAgent, callSets[i])
	}
	var ours, raw, ratio, p50, p99, errs []float64
	for run := range e.cfg.runs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var (
			r          ingestResult
			rawN       int64
			rawElapsed time.Duration
			err1, err2 error
		)
		// Alternate the order so that table growth favours neither.
		if run%2 == 0 {
			rawN, rawElapsed, err2 = runRaw(ctx, pool, rowSets, s.IngestBatches)
			r, err1 = runAgents(ctx, addr, callSets, s.IngestBatches)
		} else {
			r, err1 = runAgents(ctx, addr, callSets, s.IngestBatches)
			rawN, rawElapsed, err2 = runRaw(ctx, pool, rowSets, s.IngestBatches)
		}
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		o := float64(r.calls) / r.elapsed.Seconds()
		c := float64(rawN) / rawElapsed.Seconds()
		e.logf("ingest run %d: controller %.0f calls/s (%d calls, %s), raw CopyFrom %.0f rows/s", run+1, o, r.calls, r.elapsed.Round(time.Millisecond), c)
		ours = append(ours, o)
		raw = append(raw, c)
		ratio = append(ratio, 100*o/c)
		p50 = append(p50, percentileMs(r.acks, 50))
		p99 = append(p99, percentileMs(r.acks, 99))
		errs = append(errs, float64(r.errors))
	}
	in := fmt.Sprintf("%d agents × %d batches × %d calls, ≤8 batches in flight per agent", s.IngestAgents, s.IngestBatches, ingestBatchSize)
	rep.add(sec, "controller committed calls/s", "calls/s", ours, atLeast(150_000), in)
	rep.add(sec, "raw pgx CopyFrom ceiling", "rows/s", raw, nil, fmt.Sprintf("%d writers, same rows, same table and indexes", s.IngestAgents))
	rep.add(sec, "controller / raw ceiling (same run)", "%", ratio, atLeast(70), "")
	rep.add(sec, "batch ack latency p50", "ms", p50, nil, "send → ack, includes queueing behind the window")
	rep.add(sec, "batch ack latency p99", "ms", p99, nil, "")
	rep.add(sec, "batches acked with an error", "count", errs, below(1), "")
	return nil
}
