package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orbweaver/orbweaver/controller/store"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/durhist"
)

const otherAgent = "7a0d9e63-2c3b-4d4e-9f50-6b7c8d9e0f1a"

// rollups reads http_calls_1m and then http_edges_1m, one line per row,
// histograms merged into one entry per bucket (their stored form depends
// on the batches).
func rollups(t *testing.T, s *store.Store) []string {
	t.Helper()
	return append(queryStrings(t, s, `SELECT concat_ws(' ', bucket, agent_id, coalesce(host(server_ip), '-'), coalesce(server_port::text, '-'),
		calls, errors, bytes, duration_count, duration_sum_us,
		coalesce(duration_min_us::text, '-'), coalesce(duration_max_us::text, '-'), http_histogram_merge(duration_histogram)::text)
		FROM http_calls_1m ORDER BY bucket, agent_id, server_ip, server_port`), edges(t, s)...)
}

// edges reads the edges as rollups does, per minute then per 10 minutes:
// each tier's table and the rows pending in http_edges_1m_pending, added
// up.
func edges(t *testing.T, s *store.Store) []string {
	t.Helper()
	var lines []string
	for _, tier := range []struct{ table, width string }{{"http_edges_1m", "1 minute"}, {"http_edges_10m", "10 minutes"}} {
		lines = append(lines, queryStrings(t, s, `SELECT concat_ws(' ', '`+tier.table+`', bucket, agent_id, host(client_ip), host(server_ip), server_port,
			sum(calls), sum(errors), sum(bytes), http_histogram_merge(http_histogram_concat(duration_histogram))::text)
			FROM (SELECT * FROM `+tier.table+` UNION ALL
				SELECT date_bin('`+tier.width+`', bucket, '2000-01-01 00:00:00+00'), agent_id, client_ip, server_ip, server_port,
					calls, errors, bytes, duration_histogram FROM http_edges_1m_pending) e
			GROUP BY bucket, agent_id, client_ip, server_ip, server_port
			ORDER BY bucket, agent_id, client_ip, server_ip, server_port`)...)
	}
	return lines
}

// rollupCalls returns n varied calls around base: servers, methods,
// statuses (none included), durations from microseconds to seconds, calls
// without a duration, without addresses, or without any timestamp.
func rollupCalls(rng *rand.Rand, n int, base time.Time) []*orbweaverv1.HttpCall {
	calls := make([]*orbweaverv1.HttpCall, n)
	for i := range calls {
		start := base.Add(time.Duration(rng.Int64N(int64(3 * time.Minute))))
		c := call(start)
		c.ServerIp = []byte{10, 0, 1, byte(rng.IntN(3))}
		c.ServerPort = uint32(8080 + rng.IntN(2))
		c.ClientIp = []byte{10, 0, 2, byte(rng.IntN(4))}
		c.Method = []string{"GET", "GET", "POST", "PUT"}[rng.IntN(4)]
		c.Status = []uint32{200, 200, 200, 404, 500, 503, 0}[rng.IntN(7)]
		c.RequestHeaderSize, c.RequestBodySize = int64(rng.IntN(500)), int64(rng.IntN(5000))
		c.ResponseHeaderSize, c.ResponseBodySize = int64(rng.IntN(500)), int64(rng.IntN(50000))
		dur := time.Duration(rng.ExpFloat64() * float64(20*time.Millisecond))
		c.ResponseEndNs = c.RequestStartNs + int64(dur)
		switch rng.IntN(40) {
		case 0: // no response
			c.Status, c.ResponseStartNs, c.ResponseEndNs = 0, 0, 0
		case 1: // response only
			c.RequestStartNs, c.RequestEndNs, c.Method = 0, 0, ""
		case 2: // addresses unknown
			c.ServerIp, c.ServerPort, c.ClientIp, c.ClientPort = nil, 0, nil, 0
		case 3: // port without an address
			c.ServerIp = nil
		case 4: // no timestamp at all: the time of insertion
			c.RequestStartNs, c.RequestEndNs, c.ResponseStartNs, c.ResponseEndNs = 0, 0, 0, 0
		}
		calls[i] = c
	}
	return calls
}

// TestRollupsMatchRebuild stores batches through InsertCallBatch and
// InsertCallBatches (two agents, duplicates, late calls, histograms long
// enough to be merged in place) and checks the rollups against a rebuild
// from the stored calls.
func TestRollupsMatchRebuild(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	rng := rand.New(rand.NewPCG(7, 8))
	base := time.Now().Add(-2 * time.Minute)
	seq := uint64(0)
	for i := range 30 {
		seq++
		if _, err := s.InsertCallBatch(ctx, batch(seq, rollupCalls(rng, 200, base)...)); err != nil {
			t.Fatal(err)
		}
		if i == 10 {
			fold(t, s) // folded edges, then more pending rows of the same minutes
		}
	}
	// Late calls, two days old, and a batch sent again.
	seq++
	late := batch(seq, rollupCalls(rng, 50, base.AddDate(0, 0, -2))...)
	for range 2 {
		if _, err := s.InsertCallBatch(ctx, late); err != nil {
			t.Fatal(err)
		}
	}
	// Several agents' batches in one transaction, one of them twice.
	other := &orbweaverv1.CallBatch{AgentId: otherAgent, BootId: testBoot, Sequence: 1, HttpCalls: rollupCalls(rng, 300, base)}
	res, err := s.InsertCallBatches(ctx, []*orbweaverv1.CallBatch{batch(seq+1, rollupCalls(rng, 100, base)...), other, other, late})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("batch %d: %v", i, r.Err)
		}
	}
	// A histogram above the merge threshold: one key, every bucket.
	wide := make([]*orbweaverv1.HttpCall, 0, 600)
	for i := range 600 {
		c := call(base)
		c.ResponseEndNs = c.RequestStartNs + int64(1000*(1+i*i))
		wide = append(wide, c)
	}
	for i := 0; i < len(wide); i += 100 {
		seq += 2
		if _, err := s.InsertCallBatch(ctx, batch(seq, wide[i:i+100]...)); err != nil {
			t.Fatal(err)
		}
	}
	var longest int
	if err := s.Pool().QueryRow(ctx, "SELECT max(cardinality(duration_histogram)) FROM http_calls_1m").Scan(&longest); err != nil {
		t.Fatal(err)
	}
	if longest > 256 {
		t.Errorf("a histogram has %d entries, more than the merge threshold", longest)
	}

	maintained := rollups(t, s)
	if len(maintained) < 30 {
		t.Fatalf("%d rollup rows", len(maintained))
	}
	var calls int64
	if err := s.Pool().QueryRow(ctx, "SELECT sum(calls) FROM http_calls_1m").Scan(&calls); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CountCalls(ctx, ""); err != nil || n != calls {
		t.Fatalf("rollups count %d calls, the table holds %d (%v)", calls, n, err)
	}
	// The edges count the calls with both addresses, and only them.
	var edgeCalls, withBoth int64
	if err := s.Pool().QueryRow(ctx, `SELECT (SELECT sum(calls) FROM http_edges_1m) + (SELECT sum(calls) FROM http_edges_1m_pending),
		(SELECT count(*) FROM http_calls WHERE client_ip IS NOT NULL AND server_ip IS NOT NULL)`).Scan(&edgeCalls, &withBoth); err != nil {
		t.Fatal(err)
	}
	if edgeRows := len(edges(t, s)); edgeCalls != withBoth || withBoth == calls || edgeRows < 100 {
		t.Fatalf("edges count %d calls in %d rows; %d calls have both addresses, of %d", edgeCalls, edgeRows, withBoth, calls)
	}
	n, err := s.RebuildRollups(ctx, base.AddDate(0, 0, -3), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if int(n) != len(maintained) {
		t.Errorf("rebuild wrote %d rows, the batches %d", n, len(maintained))
	}
	if rebuilt := rollups(t, s); !slices.Equal(maintained, rebuilt) {
		t.Errorf("rollups differ from a rebuild:\n%s", diffLines(maintained, rebuilt))
	}
}

// fold folds the pending edges, checking that the edges read the same
// before and after and that nothing is left pending.
func fold(t *testing.T, s *store.Store) {
	t.Helper()
	ctx := context.Background()
	before := edges(t, s)
	var pending int64
	if err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM http_edges_1m_pending").Scan(&pending); err != nil {
		t.Fatal(err)
	}
	n, err := s.FoldEdges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != pending {
		t.Errorf("folded %d rows, %d were pending", n, pending)
	}
	var left, folded int
	if err := s.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM http_edges_1m_pending),
		(SELECT count(*) FROM http_edges_1m) + (SELECT count(*) FROM http_edges_10m)`).Scan(&left, &folded); err != nil {
		t.Fatal(err)
	}
	if left != 0 || folded != len(before) {
		t.Errorf("after a fold: %d rows pending, %d folded; want 0, %d", left, folded, len(before))
	}
	if after := edges(t, s); !slices.Equal(before, after) {
		t.Errorf("a fold changed the edges:\n%s", diffLines(before, after))
	}
}

// A transaction's edges are pending until folded: one row per key and
// transaction; folding adds them up into one row per key, histograms
// above the merge threshold merged.
func TestFoldEdges(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	base := time.Now().Truncate(time.Minute).Add(-time.Minute)
	// Three transactions of the same edge (one minute, one client, one
	// server), 100 calls each in buckets 1 … 100.
	for i := range 3 {
		calls := make([]*orbweaverv1.HttpCall, 100)
		for j := range calls {
			c := call(base.Add(time.Duration(j) * 100 * time.Millisecond))
			c.ResponseEndNs = c.RequestStartNs + durhist.Lower(1+j)*1000
			calls[j] = c
		}
		if _, err := s.InsertCallBatch(ctx, batch(uint64(i+1), calls...)); err != nil {
			t.Fatal(err)
		}
	}
	equalStrings(t, "pending", queryStrings(t, s,
		"SELECT calls || ' ' || cardinality(duration_histogram) FROM http_edges_1m_pending ORDER BY 1"),
		[]string{"100 100", "100 100", "100 100"})
	fold(t, s)
	// 300 entries are above the threshold: merged, one entry (count 3)
	// per bucket.
	for _, table := range []string{"http_edges_1m", "http_edges_10m"} {
		equalStrings(t, "folded into "+table, queryStrings(t, s,
			"SELECT calls || ' ' || cardinality(duration_histogram) || ' ' || duration_histogram[100] FROM "+table),
			[]string{fmt.Sprintf("300 100 %d", durhist.Entry(100, 3))})
	}
	if n, err := s.FoldEdges(ctx); err != nil || n != 0 {
		t.Errorf("folding nothing: %d rows (%v)", n, err)
	}
}

// diffLines shows the lines only in a (-) or only in b (+).
func diffLines(a, b []string) string {
	var out string
	for _, l := range a {
		if !slices.Contains(b, l) {
			out += "- " + l + "\n"
		}
	}
	for _, l := range b {
		if !slices.Contains(a, l) {
			out += "+ " + l + "\n"
		}
	}
	return out
}

// The stored histograms use the buckets of http_duration_buckets.
func TestDurationBucketsTable(t *testing.T) {
	s := open(t)
	var want []string
	want = append(want, "0 - 1")
	for b := 1; b < durhist.Buckets; b++ {
		upper := "-"
		if b+1 < durhist.Buckets {
			upper = fmt.Sprint(durhist.Lower(b + 1))
		}
		want = append(want, fmt.Sprintf("%d %d %s", b, durhist.Lower(b), upper))
	}
	equalStrings(t, "http_duration_buckets", queryStrings(t, s,
		"SELECT concat_ws(' ', bucket, coalesce(lower_us::text, '-'), coalesce(upper_us::text, '-')) FROM http_duration_buckets ORDER BY bucket"), want)
	// width_bucket over the bounds, as the rebuild computes buckets.
	for _, us := range []int64{-3, 0, 1, 31, 32, 33, 34, 999, 1000, 15_000, 86_400_000_000, 1 << 50} {
		var got int
		if err := s.Pool().QueryRow(context.Background(), `SELECT width_bucket($1::bigint,
			(SELECT array_agg(lower_us ORDER BY bucket) FROM http_duration_buckets WHERE bucket > 0))`, us).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != durhist.Bucket(us) {
			t.Errorf("bucket of %d µs: SQL %d, Go %d", us, got, durhist.Bucket(us))
		}
	}
}

// Writers storing batches of one agent that update the same rollup rows,
// concurrently and with a rebuild running, neither deadlock nor lose calls.
func TestRollupsConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	base := time.Now().Add(-time.Minute)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	folding, stopFolding := context.WithCancel(ctx)
	folded := make(chan error, 1)
	go func() { // as Store.Run does, only more often
		for folding.Err() == nil {
			if _, err := s.FoldEdges(ctx); err != nil {
				folded <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
		folded <- nil
	}()
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range 10 {
				var batches []*orbweaverv1.CallBatch
				for j := range 1 + rng.IntN(3) {
					agent := []string{testAgent, otherAgent}[(i+j)%2]
					batches = append(batches, &orbweaverv1.CallBatch{AgentId: agent, BootId: testBoot,
						Sequence: uint64(1000*w + 10*i + j + 1), HttpCalls: rollupCalls(rng, 100, base)})
				}
				if w%2 == 1 {
					slices.Reverse(batches)
				}
				res, err := s.InsertCallBatches(ctx, batches)
				if err == nil {
					for _, r := range res {
						err = r.Err
					}
				}
				if err != nil {
					errs <- err
					return
				}
				if w == 0 && i == 5 {
					if _, err := s.RebuildRollups(ctx, base.Add(-time.Hour), time.Now().Add(time.Hour)); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	stopFolding()
	if err := <-folded; err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	maintained := rollups(t, s)
	if _, err := s.RebuildRollups(ctx, base.Add(-time.Hour), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if rebuilt := rollups(t, s); !slices.Equal(maintained, rebuilt) {
		t.Errorf("rollups differ from a rebuild:\n%s", diffLines(maintained, rebuilt))
	}
}

// Migration 0011 builds the rollups of the calls stored before it.
func TestMigrateBackfillsRollups(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	rng := rand.New(rand.NewPCG(3, 4))
	if _, err := s.InsertCallBatch(ctx, batch(1, rollupCalls(rng, 500, time.Now().Add(-time.Hour))...)); err != nil {
		t.Fatal(err)
	}
	want := rollups(t, s)
	// As before 0011: no rollup tables, nor their functions.
	for _, sql := range []string{"DROP TABLE http_calls_1m, http_duration_buckets",
		"DROP FUNCTION http_calls_rollup_rebuild", "DELETE FROM schema_migrations WHERE version = 11"} {
		if _, err := s.Pool().Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rollups(t, s); !slices.Equal(got, want) {
		t.Errorf("backfilled rollups differ:\n%s", diffLines(want, got))
	}
	// The read-only role can read the rollups.
	rows, err := s.Pool().Query(ctx, `SELECT has_table_privilege('orbweaver_reader', t, 'SELECT')::text
		FROM unnest(ARRAY['http_calls_1m', 'http_duration_buckets']) t`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	equalStrings(t, "reader privileges", got, []string{"true", "true"})
}

// Migration 0013 builds the edges of the calls stored before it.
func TestMigrateBackfillsEdges(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	rng := rand.New(rand.NewPCG(5, 6))
	if _, err := s.InsertCallBatch(ctx, batch(1, rollupCalls(rng, 500, time.Now().Add(-time.Hour))...)); err != nil {
		t.Fatal(err)
	}
	want := edges(t, s)
	if len(want) < 40 {
		t.Fatalf("%d edges", len(want))
	}
	for _, sql := range []string{"DROP TABLE http_edges_1m, http_edges_10m, http_edges_1m_pending",
		"DROP FUNCTION http_edges_rollup_rebuild, http_rollups_rebuild, http_edges_fold, http_edges_tiers",
		"DELETE FROM schema_migrations WHERE version = 13"} {
		if _, err := s.Pool().Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := edges(t, s); !slices.Equal(got, want) {
		t.Errorf("backfilled edges differ:\n%s", diffLines(want, got))
	}
	var readable bool
	if err := s.Pool().QueryRow(ctx, "SELECT has_table_privilege('orbweaver_reader', 'http_edges_1m', 'SELECT')").Scan(&readable); err != nil || !readable {
		t.Fatalf("orbweaver_reader can read http_edges_1m: %v (%v)", readable, err)
	}
}

// Run folds the pending edges by itself.
func TestRunFoldsEdges(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := open(t)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	rng := rand.New(rand.NewPCG(9, 10))
	if _, err := s.InsertCallBatch(ctx, batch(1, rollupCalls(rng, 300, time.Now().Add(-time.Minute))...)); err != nil {
		t.Fatal(err)
	}
	want := edges(t, s)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pending int
		if err := s.Pool().QueryRow(ctx, "SELECT count(*) FROM http_edges_1m_pending").Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d edges still pending after 30 s", pending)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := edges(t, s); !slices.Equal(got, want) {
		t.Errorf("folded edges differ:\n%s", diffLines(want, got))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
