package metrics

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeSource returns a settable snapshot and counts calls.
type fakeSource struct {
	mu    sync.Mutex
	snap  Snapshot
	calls int
}

func (f *fakeSource) Snapshot() Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.snap
}

func (f *fakeSource) set(s Snapshot) {
	f.mu.Lock()
	f.snap = s
	f.mu.Unlock()
}

func TestCollect(t *testing.T) {
	tests := []struct {
		name string
		snap Snapshot
		want string
	}{
		{
			name: "busy and connected",
			snap: Snapshot{
				Packets: 1000, Bytes: 123456, KernelDrops: 7,
				QueueDropsByReason: map[string]uint64{"queue_full_calls": 3, "queue_full_bytes": 2},
				ParseErrors:        4, CallsCaptured: 500, CallsAcked: 480,
				BatchesAcked: 12, BatchesResent: 1, Duplicates: 1, Reconnects: 2,
				QueueDepth: 5, InFlightBatches: 2, UnackedCalls: 20,
				Connected: true, Capturing: true, LastAckRTT: 1500 * time.Microsecond,
				ConnectionsEvicted: 9, ConnectionsRejected: 8, CapSkippedBytes: 1000, EvictedBytes: 2000, MemoryRefused: 3,
				DecodeMemory: 1 << 20, DecodeBudget: 64 << 20,
			},
			want: `
# HELP orbweaver_agent_batches_acked_total Call batches the controller acknowledged.
# TYPE orbweaver_agent_batches_acked_total counter
orbweaver_agent_batches_acked_total 12
# HELP orbweaver_agent_batches_resent_total Call batches sent again after a reconnect.
# TYPE orbweaver_agent_batches_resent_total counter
orbweaver_agent_batches_resent_total 1
# HELP orbweaver_agent_bytes_total Captured length of the frames captured, in bytes.
# TYPE orbweaver_agent_bytes_total counter
orbweaver_agent_bytes_total 123456
# HELP orbweaver_agent_calls_acked_total Calls in batches the controller acknowledged.
# TYPE orbweaver_agent_calls_acked_total counter
orbweaver_agent_calls_acked_total 480
# HELP orbweaver_agent_calls_captured_total Calls produced by the capture pipeline.
# TYPE orbweaver_agent_calls_captured_total counter
orbweaver_agent_calls_captured_total 500
# HELP orbweaver_agent_capturing 1 when a capture is running.
# TYPE orbweaver_agent_capturing gauge
orbweaver_agent_capturing 1
# HELP orbweaver_agent_connected 1 when a stream to the controller is open.
# TYPE orbweaver_agent_connected gauge
orbweaver_agent_connected 1
# HELP orbweaver_agent_decode_connections_evicted_total TCP connections the decoder forgot to stay within its memory budget, least recently seen first.
# TYPE orbweaver_agent_decode_connections_evicted_total counter
orbweaver_agent_decode_connections_evicted_total 9
# HELP orbweaver_agent_decode_connections_rejected_total Packets that would have opened a TCP connection beyond parsing.max_connections or the memory budget.
# TYPE orbweaver_agent_decode_connections_rejected_total counter
orbweaver_agent_decode_connections_rejected_total 8
# HELP orbweaver_agent_decode_dropped_bytes_total TCP stream bytes not parsed because of the decoder's memory limits, by reason: buffer_cap (holes skipped when a buffer cap or the budget was reached), evicted (bytes buffered by evicted connections).
# TYPE orbweaver_agent_decode_dropped_bytes_total counter
orbweaver_agent_decode_dropped_bytes_total{reason="buffer_cap"} 1000
orbweaver_agent_decode_dropped_bytes_total{reason="evicted"} 2000
# HELP orbweaver_agent_decode_memory_budget_bytes The decoder's memory budget (parsing.total_buffer_mib); 0 when not capturing.
# TYPE orbweaver_agent_decode_memory_budget_bytes gauge
orbweaver_agent_decode_memory_budget_bytes 67108864
# HELP orbweaver_agent_decode_memory_bytes Bytes charged to the decoder's memory budget: connection state, buffers and calls awaiting a response.
# TYPE orbweaver_agent_decode_memory_bytes gauge
orbweaver_agent_decode_memory_bytes 1048576
# HELP orbweaver_agent_decode_memory_refused_total HTTP header blocks, lines and body captures the decoder's memory budget could not hold.
# TYPE orbweaver_agent_decode_memory_refused_total counter
orbweaver_agent_decode_memory_refused_total 3
# HELP orbweaver_agent_duplicate_batches_total Acknowledged batches the controller had already stored.
# TYPE orbweaver_agent_duplicate_batches_total counter
orbweaver_agent_duplicate_batches_total 1
# HELP orbweaver_agent_in_flight_batches Call batches sent and not yet acknowledged.
# TYPE orbweaver_agent_in_flight_batches gauge
orbweaver_agent_in_flight_batches 2
# HELP orbweaver_agent_kernel_drops_total Packets the kernel dropped before capture.
# TYPE orbweaver_agent_kernel_drops_total counter
orbweaver_agent_kernel_drops_total 7
# HELP orbweaver_agent_last_ack_rtt_seconds Round trip of the latest acknowledged batch.
# TYPE orbweaver_agent_last_ack_rtt_seconds gauge
orbweaver_agent_last_ack_rtt_seconds 0.0015
# HELP orbweaver_agent_packets_total Frames captured.
# TYPE orbweaver_agent_packets_total counter
orbweaver_agent_packets_total 1000
# HELP orbweaver_agent_parse_errors_total Malformed frames and HTTP messages.
# TYPE orbweaver_agent_parse_errors_total counter
orbweaver_agent_parse_errors_total 4
# HELP orbweaver_agent_queue_depth Calls queued for upload, not yet in a sent batch.
# TYPE orbweaver_agent_queue_depth gauge
orbweaver_agent_queue_depth 5
# HELP orbweaver_agent_queue_drops_total Calls dropped by the upload queue, by reason.
# TYPE orbweaver_agent_queue_drops_total counter
orbweaver_agent_queue_drops_total{reason="queue_full_bytes"} 2
orbweaver_agent_queue_drops_total{reason="queue_full_calls"} 3
# HELP orbweaver_agent_reconnects_total Streams re-established to the controller.
# TYPE orbweaver_agent_reconnects_total counter
orbweaver_agent_reconnects_total 2
# HELP orbweaver_agent_unacked_calls Calls queued or in flight, lost if the agent dies now.
# TYPE orbweaver_agent_unacked_calls gauge
orbweaver_agent_unacked_calls 20
`,
		},
		{
			name: "zero snapshot",
			snap: Snapshot{},
			want: `
# HELP orbweaver_agent_batches_acked_total Call batches the controller acknowledged.
# TYPE orbweaver_agent_batches_acked_total counter
orbweaver_agent_batches_acked_total 0
# HELP orbweaver_agent_batches_resent_total Call batches sent again after a reconnect.
# TYPE orbweaver_agent_batches_resent_total counter
orbweaver_agent_batches_resent_total 0
# HELP orbweaver_agent_bytes_total Captured length of the frames captured, in bytes.
# TYPE orbweaver_agent_bytes_total counter
orbweaver_agent_bytes_total 0
# HELP orbweaver_agent_calls_acked_total Calls in batches the controller acknowledged.
# TYPE orbweaver_agent_calls_acked_total counter
orbweaver_agent_calls_acked_total 0
# HELP orbweaver_agent_calls_captured_total Calls produced by the capture pipeline.
# TYPE orbweaver_agent_calls_captured_total counter
orbweaver_agent_calls_captured_total 0
# HELP orbweaver_agent_capturing 1 when a capture is running.
# TYPE orbweaver_agent_capturing gauge
orbweaver_agent_capturing 0
# HELP orbweaver_agent_connected 1 when a stream to the controller is open.
# TYPE orbweaver_agent_connected gauge
orbweaver_agent_connected 0
# HELP orbweaver_agent_decode_connections_evicted_total TCP connections the decoder forgot to stay within its memory budget, least recently seen first.
# TYPE orbweaver_agent_decode_connections_evicted_total counter
orbweaver_agent_decode_connections_evicted_total 0
# HELP orbweaver_agent_decode_connections_rejected_total Packets that would have opened a TCP connection beyond parsing.max_connections or the memory budget.
# TYPE orbweaver_agent_decode_connections_rejected_total counter
orbweaver_agent_decode_connections_rejected_total 0
# HELP orbweaver_agent_decode_dropped_bytes_total TCP stream bytes not parsed because of the decoder's memory limits, by reason: buffer_cap (holes skipped when a buffer cap or the budget was reached), evicted (bytes buffered by evicted connections).
# TYPE orbweaver_agent_decode_dropped_bytes_total counter
orbweaver_agent_decode_dropped_bytes_total{reason="buffer_cap"} 0
orbweaver_agent_decode_dropped_bytes_total{reason="evicted"} 0
# HELP orbweaver_agent_decode_memory_budget_bytes The decoder's memory budget (parsing.total_buffer_mib); 0 when not capturing.
# TYPE orbweaver_agent_decode_memory_budget_bytes gauge
orbweaver_agent_decode_memory_budget_bytes 0
# HELP orbweaver_agent_decode_memory_bytes Bytes charged to the decoder's memory budget: connection state, buffers and calls awaiting a response.
# TYPE orbweaver_agent_decode_memory_bytes gauge
orbweaver_agent_decode_memory_bytes 0
# HELP orbweaver_agent_decode_memory_refused_total HTTP header blocks, lines and body captures the decoder's memory budget could not hold.
# TYPE orbweaver_agent_decode_memory_refused_total counter
orbweaver_agent_decode_memory_refused_total 0
# HELP orbweaver_agent_duplicate_batches_total Acknowledged batches the controller had already stored.
# TYPE orbweaver_agent_duplicate_batches_total counter
orbweaver_agent_duplicate_batches_total 0
# HELP orbweaver_agent_in_flight_batches Call batches sent and not yet acknowledged.
# TYPE orbweaver_agent_in_flight_batches gauge
orbweaver_agent_in_flight_batches 0
# HELP orbweaver_agent_kernel_drops_total Packets the kernel dropped before capture.
# TYPE orbweaver_agent_kernel_drops_total counter
orbweaver_agent_kernel_drops_total 0
# HELP orbweaver_agent_last_ack_rtt_seconds Round trip of the latest acknowledged batch.
# TYPE orbweaver_agent_last_ack_rtt_seconds gauge
orbweaver_agent_last_ack_rtt_seconds 0
# HELP orbweaver_agent_packets_total Frames captured.
# TYPE orbweaver_agent_packets_total counter
orbweaver_agent_packets_total 0
# HELP orbweaver_agent_parse_errors_total Malformed frames and HTTP messages.
# TYPE orbweaver_agent_parse_errors_total counter
orbweaver_agent_parse_errors_total 0
# HELP orbweaver_agent_queue_depth Calls queued for upload, not yet in a sent batch.
# TYPE orbweaver_agent_queue_depth gauge
orbweaver_agent_queue_depth 0
# HELP orbweaver_agent_reconnects_total Streams re-established to the controller.
# TYPE orbweaver_agent_reconnects_total counter
orbweaver_agent_reconnects_total 0
# HELP orbweaver_agent_unacked_calls Calls queued or in flight, lost if the agent dies now.
# TYPE orbweaver_agent_unacked_calls gauge
orbweaver_agent_unacked_calls 0
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &fakeSource{snap: tt.snap}
			if err := testutil.CollectAndCompare(NewCollector(src), strings.NewReader(tt.want)); err != nil {
				t.Error(err)
			}
			if src.calls != 1 {
				t.Errorf("Snapshot called %d times per collect, want 1", src.calls)
			}
		})
	}
}

// TestRegistryReadsAtScrapeTime checks that the registry returned by New
// reflects the Source at each gather, with no state of its own.
func TestRegistryReadsAtScrapeTime(t *testing.T) {
	src := &fakeSource{}
	m := New(src)
	for _, n := range []uint64{10, 25} {
		src.set(Snapshot{Packets: n, QueueDropsByReason: map[string]uint64{"queue_full_calls": n / 5}})
		want := strings.NewReader(strings.NewReplacer("N", strconv.FormatUint(n, 10), "D", strconv.FormatUint(n/5, 10)).Replace(`
# HELP orbweaver_agent_packets_total Frames captured.
# TYPE orbweaver_agent_packets_total counter
orbweaver_agent_packets_total N
# HELP orbweaver_agent_queue_drops_total Calls dropped by the upload queue, by reason.
# TYPE orbweaver_agent_queue_drops_total counter
orbweaver_agent_queue_drops_total{reason="queue_full_calls"} D
`))
		if err := testutil.GatherAndCompare(m.Registry(), want,
			"orbweaver_agent_packets_total", "orbweaver_agent_queue_drops_total"); err != nil {
			t.Errorf("packets=%d: %v", n, err)
		}
	}
}

func TestRuntimeCollectorsAndLint(t *testing.T) {
	m := New(&fakeSource{snap: Snapshot{QueueDropsByReason: map[string]uint64{"queue_full_calls": 1}}})
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "orbweaver_agent_packets_total"} {
		if !seen[name] {
			t.Errorf("metric %s not exported", name)
		}
	}
	problems, err := testutil.CollectAndLint(NewCollector(&fakeSource{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}
