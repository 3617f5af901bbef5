package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// benchE2E is section 4: requests at a modest rate through the live rig;
// a poller queries the database every 10 ms, and a call's latency is from
// the handler writing its response to the end of the first query that
// returned its row (an upper bound, within one poll).
func benchE2E(ctx context.Context, e *env, rep *report) error {
	const sec = "4 e2e"
	rg, err := e.rig(ctx)
	if err != nil {
		return err
	}
	s := e.cfg.sizes
	var p50, p99, missing, drops []float64
	for run := range e.cfg.runs {
		m0, err := rg.scrape()
		if err != nil {
			return err
		}
		prefix := fmt.Sprintf("e2e-%d-%d-", run, time.Now().UnixNano())
		since := time.Now().Add(-time.Second)
		if run == 0 {
			// The live section has just stored a million calls or more in
			// today's partition, whose planner statistics stay stale until
			// autovacuum gets to it: the poller's query then scanned the
			// whole partition (90 ms to 1 s per poll), which measured the
			// poller rather than the pipeline. Analyze first, as
			// autovacuum would.
			if _, err := rg.pool.Exec(ctx, "ANALYZE http_calls"); err != nil {
				return fmt.Errorf("analyze: %w", err)
			}
			logPollPlan(ctx, e, rg, since, prefix)
		}
		seen := make(map[string]time.Time)
		pctx, cancel := context.WithCancel(ctx)
		pollDone := make(chan error, 1)
		go func() {
			pollDone <- poll(pctx, rg, prefix, since, seen)
		}()
		made, _ := rg.load(ctx, s.E2ERate, time.Duration(float64(s.E2ERequests)/float64(s.E2ERate)*float64(time.Second)), prefix)
		// Wait until every answered request is seen (30 s at most).
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if seenCount(rg, seen) >= int(made) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		if err := <-pollDone; err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		var lats []time.Duration
		rg.mu.Lock()
		var miss int
		for id, w := range rg.written {
			if len(id) < len(prefix) || id[:len(prefix)] != prefix {
				continue
			}
			if t, ok := seen[id]; ok {
				lats = append(lats, t.Sub(w))
			} else {
				miss++
				if miss <= 3 {
					e.logf("e2e: never seen: %s (response written %s); calls around it that are not ok: %s",
						id, w.Format("15:04:05.000000"), rg.oddCalls(ctx, w))
				}
			}
			delete(rg.written, id)
		}
		rg.mu.Unlock()
		m1, err := rg.scrape()
		if err != nil {
			return err
		}
		drops = append(drops, m1["orbweaver_agent_kernel_drops_total"]-m0["orbweaver_agent_kernel_drops_total"])
		p50 = append(p50, percentileMs(lats, 50))
		p99 = append(p99, percentileMs(lats, 99))
		missing = append(missing, float64(miss))
		rg.mu.Lock()
		pollP50, pollMax := percentileMs(rg.pollTimes, 50), percentileMs(rg.pollTimes, 100)
		rg.pollTimes = rg.pollTimes[:0]
		rg.mu.Unlock()
		e.logf("e2e run %d: %d requests, p50 %.0f ms, p99 %.0f ms, %d never seen; poll query p50 %.1f ms, max %.1f ms",
			run+1, made, p50[len(p50)-1], p99[len(p99)-1], miss, pollP50, pollMax)
	}
	in := fmt.Sprintf("%d requests at %d req/s per run; agent batch delay default (200 ms); 10 ms polling", s.E2ERequests, s.E2ERate)
	rep.add(sec, "response written → row queryable p50", "ms", p50, nil, in)
	rep.add(sec, "response written → row queryable p99", "ms", p99, below(1000), "")
	rep.add(sec, "calls never seen within 30 s", "calls", missing, below(1), "")
	rep.add(sec, "kernel drops during the run", "packets", drops, nil, "agent metrics")
	return nil
}

// seenCount is the number of ids seen so far; seen is written
// by the poller under rg.mu.
func seenCount(rg *liveRig, seen map[string]time.Time) int {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	return len(seen)
}

// pollSQL finds the calls of a request id prefix stored since a time.
const pollSQL = `SELECT x_request_id FROM http_calls WHERE time >= $1 AND x_request_id LIKE $2`

// poll records in seen when each call of prefix first becomes queryable.
func poll(ctx context.Context, rg *liveRig, prefix string, since time.Time, seen map[string]time.Time) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		q0 := time.Now()
		// Planned for these values every time (simple protocol): a cached
		// generic plan for "time >= $1" guesses a third of the table and
		// scans all of it, which after the live section (over a million
		// calls) made each poll take up to a second and measured the
		// poller instead of the pipeline.
		rows, err := rg.pool.Query(ctx, pollSQL, pgx.QueryExecModeSimpleProtocol, since, prefix+"%")
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return fmt.Errorf("poll: %w", err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		now := time.Now()
		rg.mu.Lock()
		rg.pollTimes = append(rg.pollTimes, now.Sub(q0))
		for _, id := range ids {
			if _, ok := seen[id]; !ok {
				seen[id] = now
			}
		}
		rg.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// oddCalls describes the calls of the rig's server stored within 2 s of t
// whose parse status is not ok (a diagnostic for calls never seen).
func (rg *liveRig) oddCalls(ctx context.Context, t time.Time) string {
	rows, err := rg.pool.Query(ctx, `SELECT parse_status, coalesce(x_request_id, ''), coalesce(method, ''), coalesce(status, 0)
		FROM http_calls WHERE time BETWEEN $1 AND $2 AND server_port = $3 AND parse_status <> 'ok' LIMIT 5`,
		t.Add(-2*time.Second), t.Add(2*time.Second), rg.port)
	if err != nil {
		return "query failed: " + err.Error()
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var ps, id, method string
		var status int16
		if err := rows.Scan(&ps, &id, &method, &status); err != nil {
			return "scan failed: " + err.Error()
		}
		out = append(out, fmt.Sprintf("%s id=%q %s %d", ps, id, method, status))
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "; ")
}

// logPollPlan logs how Postgres runs the poller's query (a diagnostic).
func logPollPlan(ctx context.Context, e *env, rg *liveRig, since time.Time, prefix string) {
	plan, err := explainPlan(ctx, rg.pool, pollSQL, pgx.QueryExecModeSimpleProtocol, since, prefix+"%")
	if err != nil {
		e.logf("e2e: poll query: %v", err)
		return
	}
	e.logf("e2e: poll query plan:%s", plan)
}
