package store

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/callconv"
	"github.com/orbweaver/orbweaver/internal/durhist"
)

// Rollups: http_calls_1m (migration 0011), one row per minute, agent and
// server ip:port; http_edges_1m and http_edges_10m (migration 0013), one
// row per minute or 10 minutes, agent, client ip and server ip:port, for
// the calls that have both addresses. InsertCallBatches adds the calls of
// the batches it stores in the transaction that stores them, so that the
// rollups count every stored call exactly once. The calls are aggregated
// here, in Go, into one row per key. http_calls_1m's rows are upserted with one
// statement in key order (two transactions that update the same rows lock
// them in the same order; agent_id is part of the key, so different agents
// never update the same rows). The edges, a row per client and server that
// talked, are too many to upsert per transaction: they are appended to
// http_edges_1m_pending, and FoldEdges (run by Run every foldInterval)
// folds them into both edge tables. Every writer locks http_calls_1m, then
// http_edges_1m_pending, then http_edges_1m, then http_edges_10m, as
// http_rollups_rebuild does.
//
// A row's histogram grows by concatenation (cheap: no SQL function per
// row) and is merged into one entry per bucket (http_histogram_merge) when
// it would exceed histogramMergeAt entries.

// histogramMergeAt bounds the entries of a stored histogram between merges.
const histogramMergeAt = "256"

const upsertRollupsSQL = `INSERT INTO http_calls_1m AS r (bucket, agent_id, server_ip, server_port,
	calls, errors, bytes, duration_count, duration_sum_us, duration_min_us, duration_max_us, duration_histogram)
SELECT k.bucket, k.agent_id, k.server_ip, k.server_port,
	k.calls, k.errors, k.bytes, k.duration_count, k.duration_sum_us, k.duration_min_us, k.duration_max_us, ($14::integer[])[k.lo:k.hi]
FROM unnest($1::timestamptz[], $2::uuid[], $3::inet[], $4::integer[], $5::bigint[], $6::bigint[], $7::bigint[],
	$8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::integer[], $13::integer[])
	AS k(bucket, agent_id, server_ip, server_port, calls, errors, bytes, duration_count, duration_sum_us,
		duration_min_us, duration_max_us, lo, hi)
ON CONFLICT (bucket, agent_id, server_ip, server_port) DO UPDATE SET
	calls = r.calls + EXCLUDED.calls,
	errors = r.errors + EXCLUDED.errors,
	bytes = r.bytes + EXCLUDED.bytes,
	duration_count = r.duration_count + EXCLUDED.duration_count,
	duration_sum_us = r.duration_sum_us + EXCLUDED.duration_sum_us,
	duration_min_us = least(r.duration_min_us, EXCLUDED.duration_min_us),
	duration_max_us = greatest(r.duration_max_us, EXCLUDED.duration_max_us),
	duration_histogram = CASE
		WHEN cardinality(r.duration_histogram) + cardinality(EXCLUDED.duration_histogram) <= ` + histogramMergeAt + `
		THEN r.duration_histogram || EXCLUDED.duration_histogram
		ELSE http_histogram_merge(r.duration_histogram || EXCLUDED.duration_histogram) END`

// insertEdgesSQL appends a transaction's edges to http_edges_1m_pending;
// FoldEdges folds them into http_edges_1m and http_edges_10m (migration
// 0013).
const insertEdgesSQL = `INSERT INTO http_edges_1m_pending (bucket, agent_id, client_ip, server_ip, server_port,
	calls, errors, bytes, duration_histogram)
SELECT k.bucket, k.agent_id, k.client_ip, k.server_ip, k.server_port, k.calls, k.errors, k.bytes, ($11::integer[])[k.lo:k.hi]
FROM unnest($1::timestamptz[], $2::uuid[], $3::inet[], $4::inet[], $5::integer[], $6::bigint[], $7::bigint[],
	$8::bigint[], $9::integer[], $10::integer[])
	AS k(bucket, agent_id, client_ip, server_ip, server_port, calls, errors, bytes, lo, hi)`

// rollupKey is a key of http_calls_1m (client invalid) or of
// http_edges_1m_pending. An invalid server and portNull stand for NULL.
type rollupKey struct {
	minute   int64 // Unix microseconds
	agent    uuid.UUID
	client   netip.Addr
	server   netip.Addr
	port     int32
	portNull bool
}

func (a rollupKey) compare(b rollupKey) int {
	if c := cmp.Compare(a.minute, b.minute); c != 0 {
		return c
	}
	if c := slices.Compare(a.agent[:], b.agent[:]); c != 0 {
		return c
	}
	if c := a.client.Compare(b.client); c != 0 {
		return c
	}
	if c := a.server.Compare(b.server); c != 0 {
		return c
	}
	if a.portNull != b.portNull {
		if a.portNull {
			return 1
		}
		return -1
	}
	return cmp.Compare(a.port, b.port)
}

type rollup struct {
	calls, errors, bytes, durCount, durSum, durMin, durMax int64
	hist                                                   []int32 // an entry per call until compacted
}

// rollupBatch aggregates the calls of the batches of one transaction. The
// zero value is ready.
type rollupBatch struct {
	rows  map[rollupKey]*rollup // http_calls_1m
	edges map[rollupKey]*rollup // http_edges_1m_pending: calls, errors, bytes and hist only
}

const microsPerMinute = int64(time.Minute / time.Microsecond)

// add aggregates the calls of agent as InsertCallBatches stores them (now
// is the time of insertion, given to calls without any timestamp).
func (rb *rollupBatch) add(agent uuid.UUID, calls []*orbweaverv1.HttpCall, now time.Time) error {
	if rb.rows == nil {
		rb.rows = make(map[rollupKey]*rollup)
		rb.edges = make(map[rollupKey]*rollup)
	}
	for i, h := range calls {
		serverIP, err := ipValue(h.GetServerIp())
		if err != nil {
			return fmt.Errorf("call %d: server ip: %w", i, err)
		}
		clientIP, err := ipValue(h.GetClientIp())
		if err != nil {
			return fmt.Errorf("call %d: client ip: %w", i, err)
		}
		reqStart, respEnd := h.GetRequestStartNs(), h.GetResponseEndNs()
		ns := callconv.CallTimeNs(h, now.UnixNano())
		k := rollupKey{minute: floorDiv(floorDiv(ns, 1000), microsPerMinute) * microsPerMinute, agent: agent, server: serverIP}
		if h.GetServerPort() == 0 && !serverIP.IsValid() {
			k.portNull = true
		} else {
			k.port = int32(min(h.GetServerPort(), math.MaxInt32))
		}
		r := rb.rows[k]
		if r == nil {
			r = &rollup{}
			rb.rows[k] = r
		}
		var e *rollup // the call's edge, when it has both addresses
		if clientIP.IsValid() && serverIP.IsValid() {
			ek := k
			ek.client = clientIP
			if e = rb.edges[ek]; e == nil {
				e = &rollup{}
				rb.edges[ek] = e
			}
		}
		isError := h.GetStatus() == 0 || h.GetStatus() >= 500
		bytes := int64(clampInt32(h.GetRequestHeaderSize())) + h.GetRequestBodySize() +
			int64(clampInt32(h.GetResponseHeaderSize())) + h.GetResponseBodySize()
		r.count(isError, bytes)
		if e != nil {
			e.count(isError, bytes)
		}
		if reqStart != 0 && respEnd != 0 {
			d := (respEnd - reqStart) / 1000
			if r.durCount == 0 {
				r.durMin, r.durMax = d, d
			} else {
				r.durMin, r.durMax = min(r.durMin, d), max(r.durMax, d)
			}
			r.durCount++
			r.durSum += d
			entry := durhist.Entry(durhist.Bucket(d), 1)
			r.hist = append(r.hist, entry)
			if e != nil {
				e.hist = append(e.hist, entry)
			}
		}
	}
	return nil
}

// count adds a call that is an error or not, of bytes.
func (r *rollup) count(isError bool, bytes int64) {
	r.calls++
	if isError {
		r.errors++
	}
	r.bytes += bytes
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// compact sorts entries of one call each, appends them to flat merged into
// one entry per bucket, and returns flat and their 1-based bounds in it (lo
// > hi when there are none).
func compact(entries []int32, flat []int32) ([]int32, int32, int32) {
	slices.Sort(entries)
	lo := int32(len(flat) + 1)
	for i := 0; i < len(entries); {
		j := i + 1
		for j < len(entries) && entries[j] == entries[i] {
			j++
		}
		b, _ := durhist.Unpack(entries[i])
		for n := int64(j - i); n > 0; n -= durhist.MaxCount {
			flat = append(flat, durhist.Entry(b, min(n, durhist.MaxCount)))
		}
		i = j
	}
	return flat, lo, int32(len(flat))
}

// write upserts the aggregated rows into http_calls_1m, then appends the
// edges to http_edges_1m_pending.
func (rb *rollupBatch) write(ctx context.Context, tx pgx.Tx) error {
	n := len(rb.rows)
	if n == 0 {
		return nil
	}
	keys := make([]rollupKey, 0, n)
	for k := range rb.rows {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, rollupKey.compare)
	var (
		buckets            = make([]time.Time, n)
		agents             = make([]pgtype.UUID, n)
		servers            = make([]netip.Addr, n)
		ports              = make([]pgtype.Int4, n)
		calls, errs, bytes = make([]int64, n), make([]int64, n), make([]int64, n)
		durCounts, durSums = make([]int64, n), make([]int64, n)
		durMins, durMaxs   = make([]pgtype.Int8, n), make([]pgtype.Int8, n)
		los, his           = make([]int32, n), make([]int32, n)
		flat               = []int32{}
	)
	for i, k := range keys {
		r := rb.rows[k]
		buckets[i] = time.UnixMicro(k.minute)
		agents[i] = pgtype.UUID{Bytes: k.agent, Valid: true}
		servers[i] = k.server
		ports[i] = pgtype.Int4{Int32: k.port, Valid: !k.portNull}
		calls[i], errs[i], bytes[i], durCounts[i], durSums[i] = r.calls, r.errors, r.bytes, r.durCount, r.durSum
		durMins[i] = pgtype.Int8{Int64: r.durMin, Valid: r.durCount > 0}
		durMaxs[i] = pgtype.Int8{Int64: r.durMax, Valid: r.durCount > 0}
		flat, los[i], his[i] = compact(r.hist, flat)
	}
	if _, err := tx.Exec(ctx, upsertRollupsSQL, buckets, agents, servers, ports, calls, errs, bytes,
		durCounts, durSums, durMins, durMaxs, los, his, flat); err != nil {
		return fmt.Errorf("upsert http_calls_1m: %w", err)
	}
	return rb.writeEdges(ctx, tx)
}

// writeEdges appends the aggregated edges to http_edges_1m_pending, in no
// particular order (plain inserts into a table without keys: no lock order
// to keep).
func (rb *rollupBatch) writeEdges(ctx context.Context, tx pgx.Tx) error {
	n := len(rb.edges)
	if n == 0 {
		return nil
	}
	var (
		buckets            = make([]time.Time, n)
		agents             = make([]pgtype.UUID, n)
		clients, servers   = make([]netip.Addr, n), make([]netip.Addr, n)
		ports              = make([]int32, n)
		calls, errs, bytes = make([]int64, n), make([]int64, n), make([]int64, n)
		los, his           = make([]int32, n), make([]int32, n)
		flat               = []int32{}
	)
	i := 0
	for k, e := range rb.edges {
		buckets[i] = time.UnixMicro(k.minute)
		agents[i] = pgtype.UUID{Bytes: k.agent, Valid: true}
		clients[i], servers[i], ports[i] = k.client, k.server, k.port
		calls[i], errs[i], bytes[i] = e.calls, e.errors, e.bytes
		flat, los[i], his[i] = compact(e.hist, flat)
		i++
	}
	if _, err := tx.Exec(ctx, insertEdgesSQL, buckets, agents, clients, servers, ports, calls, errs, bytes,
		los, his, flat); err != nil {
		return fmt.Errorf("insert http_edges_1m_pending: %w", err)
	}
	return nil
}

// writeRollups adds the calls of the batches stored by a storeBatches
// transaction to the rollups, in that transaction tx: batches[pending[i]]
// for each i in stored; now is the time given to calls that have none.
func writeRollups(ctx context.Context, tx pgx.Tx, now time.Time, batches []*orbweaverv1.CallBatch, pending, stored []int) error {
	var rb rollupBatch
	for _, i := range stored {
		b := batches[pending[i]]
		agent, err := uuid.Parse(b.GetAgentId())
		if err != nil {
			return fmt.Errorf("agent id %q: %w", b.GetAgentId(), err)
		}
		if err := rb.add(agent, b.GetHttpCalls(), now); err != nil {
			return err
		}
	}
	return rb.write(ctx, tx)
}

// foldInterval is how often Run folds the pending edges: it bounds what a
// service map reads from http_edges_1m_pending (a row per edge and
// transaction) to a few seconds of transactions.
const foldInterval = 2 * time.Second

// vacuumPendingEvery: Run vacuums http_edges_1m_pending every so many
// folds, so that the rows folds delete do not pile up as dead rows that
// every fold and service map scans.
const vacuumPendingEvery = 15

// FoldEdges folds the rows of http_edges_1m_pending into http_edges_1m and
// http_edges_10m (SQL function http_edges_fold, one statement) and returns
// the pending rows folded. Readers see the edges before or after, never half-folded. Safe
// to run concurrently with itself, with InsertCallBatches and with
// RebuildRollups.
func (s *Store) FoldEdges(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, "SELECT http_edges_fold()").Scan(&n); err != nil {
		return 0, fmt.Errorf("store: fold edges: %w", err)
	}
	return n, nil
}

// RebuildRollups recomputes the rollups (http_calls_1m and the edges) of
// the whole minutes that overlap [from, to) (of the edges: the whole
// 10-minute spans) from the calls stored (SQL function
// http_rollups_rebuild) and returns the number of rollup rows written. Use it after loading calls
// without InsertCallBatch, or to repair a time range; batches stored while
// it runs wait for it. It reads every call of the range twice, in one
// statement per table.
func (s *Store) RebuildRollups(ctx context.Context, from, to time.Time) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, "SELECT http_rollups_rebuild($1, $2)", from, to).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: rebuild rollups: %w", err)
	}
	return n, nil
}
