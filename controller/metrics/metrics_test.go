package metrics

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestInitialValues(t *testing.T) {
	m := New(nil)
	want := `
# HELP orbweaver_controller_agents_connected Agents with a stream open.
# TYPE orbweaver_controller_agents_connected gauge
orbweaver_controller_agents_connected 0
# HELP orbweaver_controller_batches_total Call batches received from agents, by result: stored, duplicate (already stored, acknowledged again) or failed.
# TYPE orbweaver_controller_batches_total counter
orbweaver_controller_batches_total{result="duplicate"} 0
orbweaver_controller_batches_total{result="failed"} 0
orbweaver_controller_batches_total{result="stored"} 0
# HELP orbweaver_controller_calls_stored_total Calls stored (duplicate batches not counted).
# TYPE orbweaver_controller_calls_stored_total counter
orbweaver_controller_calls_stored_total 0
# HELP orbweaver_controller_edges_folded_total Pending service map edge rows (http_edges_1m_pending) folded into the edge rollups (http_edges_1m, http_edges_10m).
# TYPE orbweaver_controller_edges_folded_total counter
orbweaver_controller_edges_folded_total 0
# HELP orbweaver_controller_errors_total Errors by kind.
# TYPE orbweaver_controller_errors_total counter
orbweaver_controller_errors_total{kind="edge_fold"} 0
orbweaver_controller_errors_total{kind="ingest"} 0
# HELP orbweaver_controller_ingest_queue_depth Call batches received and not yet stored.
# TYPE orbweaver_controller_ingest_queue_depth gauge
orbweaver_controller_ingest_queue_depth 0
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"orbweaver_controller_agents_connected",
		"orbweaver_controller_batches_total",
		"orbweaver_controller_calls_stored_total",
		"orbweaver_controller_edges_folded_total",
		"orbweaver_controller_errors_total",
		"orbweaver_controller_ingest_queue_depth",
	); err != nil {
		t.Error(err)
	}
}

func TestEvents(t *testing.T) {
	var connected atomic.Int64
	m := New(func() int { return int(connected.Load()) })

	connected.Store(3)
	// Durations are dyadic fractions of a second so the sum is exact.
	m.BatchStored(100, false, 1953125*time.Nanosecond) // 2^-9 s, bucket 0.0025
	m.BatchStored(50, false, 500*time.Millisecond)     // bucket 0.5 (upper bound inclusive)
	m.BatchStored(100, true, 3906250*time.Nanosecond)  // duplicate, 2^-8 s, bucket 0.005
	m.BatchFailed(errors.New("boom"))
	m.Error("stream")
	m.Error("stream")
	m.IngestQueueInc()
	m.IngestQueueInc()
	m.IngestQueueInc()
	m.IngestQueueDec()
	m.EdgesFolded(1200, 15625*time.Microsecond, nil) // 2^-6 s, bucket 0.025
	m.EdgesFolded(0, 1953125*time.Nanosecond, errors.New("database down"))

	want := `
# HELP orbweaver_controller_agents_connected Agents with a stream open.
# TYPE orbweaver_controller_agents_connected gauge
orbweaver_controller_agents_connected 3
# HELP orbweaver_controller_batch_insert_seconds Time to store one call batch, duplicates included.
# TYPE orbweaver_controller_batch_insert_seconds histogram
orbweaver_controller_batch_insert_seconds_bucket{le="0.001"} 0
orbweaver_controller_batch_insert_seconds_bucket{le="0.0025"} 1
orbweaver_controller_batch_insert_seconds_bucket{le="0.005"} 2
orbweaver_controller_batch_insert_seconds_bucket{le="0.01"} 2
orbweaver_controller_batch_insert_seconds_bucket{le="0.025"} 2
orbweaver_controller_batch_insert_seconds_bucket{le="0.05"} 2
orbweaver_controller_batch_insert_seconds_bucket{le="0.1"} 2
orbweaver_controller_batch_insert_seconds_bucket{le="0.25"} 2
orbweaver_controller_batch_insert_seconds_bucket{le="0.5"} 3
orbweaver_controller_batch_insert_seconds_bucket{le="1"} 3
orbweaver_controller_batch_insert_seconds_bucket{le="2.5"} 3
orbweaver_controller_batch_insert_seconds_bucket{le="5"} 3
orbweaver_controller_batch_insert_seconds_bucket{le="10"} 3
orbweaver_controller_batch_insert_seconds_bucket{le="+Inf"} 3
orbweaver_controller_batch_insert_seconds_sum 0.505859375
orbweaver_controller_batch_insert_seconds_count 3
# HELP orbweaver_controller_batches_total Call batches received from agents, by result: stored, duplicate (already stored, acknowledged again) or failed.
# TYPE orbweaver_controller_batches_total counter
orbweaver_controller_batches_total{result="duplicate"} 1
orbweaver_controller_batches_total{result="failed"} 1
orbweaver_controller_batches_total{result="stored"} 2
# HELP orbweaver_controller_calls_stored_total Calls stored (duplicate batches not counted).
# TYPE orbweaver_controller_calls_stored_total counter
orbweaver_controller_calls_stored_total 150
# HELP orbweaver_controller_edge_fold_seconds Time to fold the pending service map edges, failed folds included.
# TYPE orbweaver_controller_edge_fold_seconds histogram
orbweaver_controller_edge_fold_seconds_bucket{le="0.001"} 0
orbweaver_controller_edge_fold_seconds_bucket{le="0.0025"} 1
orbweaver_controller_edge_fold_seconds_bucket{le="0.005"} 1
orbweaver_controller_edge_fold_seconds_bucket{le="0.01"} 1
orbweaver_controller_edge_fold_seconds_bucket{le="0.025"} 2
orbweaver_controller_edge_fold_seconds_bucket{le="0.05"} 2
orbweaver_controller_edge_fold_seconds_bucket{le="0.1"} 2
orbweaver_controller_edge_fold_seconds_bucket{le="0.25"} 2
orbweaver_controller_edge_fold_seconds_bucket{le="0.5"} 2
orbweaver_controller_edge_fold_seconds_bucket{le="1"} 2
orbweaver_controller_edge_fold_seconds_bucket{le="2.5"} 2
orbweaver_controller_edge_fold_seconds_bucket{le="5"} 2
orbweaver_controller_edge_fold_seconds_bucket{le="10"} 2
orbweaver_controller_edge_fold_seconds_bucket{le="+Inf"} 2
orbweaver_controller_edge_fold_seconds_sum 0.017578125
orbweaver_controller_edge_fold_seconds_count 2
# HELP orbweaver_controller_edges_folded_total Pending service map edge rows (http_edges_1m_pending) folded into the edge rollups (http_edges_1m, http_edges_10m).
# TYPE orbweaver_controller_edges_folded_total counter
orbweaver_controller_edges_folded_total 1200
# HELP orbweaver_controller_errors_total Errors by kind.
# TYPE orbweaver_controller_errors_total counter
orbweaver_controller_errors_total{kind="edge_fold"} 1
orbweaver_controller_errors_total{kind="ingest"} 1
orbweaver_controller_errors_total{kind="stream"} 2
# HELP orbweaver_controller_ingest_queue_depth Call batches received and not yet stored.
# TYPE orbweaver_controller_ingest_queue_depth gauge
orbweaver_controller_ingest_queue_depth 2
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"orbweaver_controller_agents_connected",
		"orbweaver_controller_batch_insert_seconds",
		"orbweaver_controller_batches_total",
		"orbweaver_controller_calls_stored_total",
		"orbweaver_controller_edge_fold_seconds",
		"orbweaver_controller_edges_folded_total",
		"orbweaver_controller_errors_total",
		"orbweaver_controller_ingest_queue_depth",
	); err != nil {
		t.Error(err)
	}

	connected.Store(0)
	if got := testutil.ToFloat64(m.batches.WithLabelValues(ResultStored)); got != 2 {
		t.Errorf("stored batches = %v, want 2", got)
	}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(`
# HELP orbweaver_controller_agents_connected Agents with a stream open.
# TYPE orbweaver_controller_agents_connected gauge
orbweaver_controller_agents_connected 0
`), "orbweaver_controller_agents_connected"); err != nil {
		t.Errorf("connected gauge not read at scrape time: %v", err)
	}
}

func TestRuntimeCollectorsAndLint(t *testing.T) {
	m := New(nil)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "orbweaver_controller_batch_insert_seconds"} {
		if !seen[name] {
			t.Errorf("metric %s not exported", name)
		}
	}
	problems, err := testutil.GatherAndLint(m.Registry(),
		"orbweaver_controller_agents_connected",
		"orbweaver_controller_batch_insert_seconds",
		"orbweaver_controller_batches_total",
		"orbweaver_controller_calls_stored_total",
		"orbweaver_controller_errors_total",
		"orbweaver_controller_ingest_queue_depth",
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

func TestNewRegistriesIndependent(t *testing.T) {
	a, b := New(nil), New(nil)
	a.BatchStored(5, false, time.Millisecond)
	if got := testutil.ToFloat64(b.callsStored); got != 0 {
		t.Errorf("second Metrics saw the first's calls: %v", got)
	}
}
