// Package metrics exposes the agent's counters as Prometheus metrics. A
// collector reads one Snapshot from a Source at every scrape, so the agent
// keeps a single set of counters (the ones it also sends in heartbeats).
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Snapshot is the agent's state at one instant. Counters are cumulative
// since the process started; gauges are current values.
type Snapshot struct {
	// Counters.
	Packets            uint64            // frames captured
	Bytes              uint64            // their captured length
	KernelDrops        uint64            // packets the kernel dropped before capture
	QueueDropsByReason map[string]uint64 // calls dropped by the upload queue, by reason
	ParseErrors        uint64            // malformed frames and HTTP messages
	CallsCaptured      uint64            // calls the pipeline produced
	CallsAcked         uint64            // calls in batches the controller acknowledged
	BatchesAcked       uint64            // batches the controller acknowledged
	BatchesResent      uint64            // batches sent again after a reconnect
	Duplicates         uint64            // batches the controller had already stored
	Reconnects         uint64            // streams re-established to the controller

	// Decoder memory (see package pipeline): what its limits cut.
	ConnectionsEvicted  uint64 // connections forgotten to stay within the memory budget
	ConnectionsRejected uint64 // packets that would have opened a connection beyond the limits
	CapSkippedBytes     uint64 // stream bytes skipped as a gap because a buffer cap or the budget was hit
	EvictedBytes        uint64 // buffered bytes discarded with evicted connections
	MemoryRefused       uint64 // header blocks, lines and body captures the budget could not hold

	// Gauges.
	QueueDepth      int           // calls queued, not yet in a sent batch
	InFlightBatches int           // batches sent and not yet acknowledged
	UnackedCalls    int           // calls queued or in flight
	Connected       bool          // a stream to the controller is open
	Capturing       bool          // a capture is running
	LastAckRTT      time.Duration // round trip of the latest acknowledged batch
	DecodeMemory    uint64        // bytes charged to the decoder's memory budget
	DecodeBudget    uint64        // the decoder's memory budget; 0 when not capturing
}

// Source returns the agent's current counters. Snapshot is called once per
// scrape, possibly concurrently with the agent's work and with other
// scrapes, so it must be safe for concurrent use. The returned map is only
// read.
type Source interface {
	Snapshot() Snapshot
}

// Metrics is the agent's metrics registry.
type Metrics struct {
	reg *prometheus.Registry
}

// New returns the agent's metrics on a new registry: a collector reading
// src at scrape time, and the Go runtime and process collectors.
func New(src Source) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		NewCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return &Metrics{reg: reg}
}

// Registry returns the registry to serve (see internal/metricsserver).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Collector is a prometheus.Collector over a Source. New registers one;
// it is exported for callers that want it on a registry of their own.
type Collector struct {
	src Source

	packets, bytes, kernelDrops, queueDrops, parseErrors     *prometheus.Desc
	callsCaptured, callsAcked, batchesAcked, batchesResent   *prometheus.Desc
	duplicates, reconnects                                   *prometheus.Desc
	evicted, rejected, droppedBytes, memRefused              *prometheus.Desc
	queueDepth, inFlight, unacked, connected, capturing, rtt *prometheus.Desc
	decodeMemory, decodeBudget                               *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector reading src at every Collect.
func NewCollector(src Source) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("orbweaver_agent_"+name, help, labels, nil)
	}
	return &Collector{
		src:           src,
		packets:       d("packets_total", "Frames captured."),
		bytes:         d("bytes_total", "Captured length of the frames captured, in bytes."),
		kernelDrops:   d("kernel_drops_total", "Packets the kernel dropped before capture."),
		queueDrops:    d("queue_drops_total", "Calls dropped by the upload queue, by reason.", "reason"),
		parseErrors:   d("parse_errors_total", "Malformed frames and HTTP messages."),
		callsCaptured: d("calls_captured_total", "Calls produced by the capture pipeline."),
		callsAcked:    d("calls_acked_total", "Calls in batches the controller acknowledged."),
		batchesAcked:  d("batches_acked_total", "Call batches the controller acknowledged."),
		batchesResent: d("batches_resent_total", "Call batches sent again after a reconnect."),
		duplicates:    d("duplicate_batches_total", "Acknowledged batches the controller had already stored."),
		reconnects:    d("reconnects_total", "Streams re-established to the controller."),
		evicted:       d("decode_connections_evicted_total", "TCP connections the decoder forgot to stay within its memory budget, least recently seen first."),
		rejected:      d("decode_connections_rejected_total", "Packets that would have opened a TCP connection beyond parsing.max_connections or the memory budget."),
		droppedBytes: d("decode_dropped_bytes_total", "TCP stream bytes not parsed because of the decoder's memory limits, by reason: "+
			"buffer_cap (holes skipped when a buffer cap or the budget was reached), evicted (bytes buffered by evicted connections).", "reason"),
		memRefused:   d("decode_memory_refused_total", "HTTP header blocks, lines and body captures the decoder's memory budget could not hold."),
		decodeMemory: d("decode_memory_bytes", "Bytes charged to the decoder's memory budget: connection state, buffers and calls awaiting a response."),
		decodeBudget: d("decode_memory_budget_bytes", "The decoder's memory budget (parsing.total_buffer_mib); 0 when not capturing."),
		queueDepth:   d("queue_depth", "Calls queued for upload, not yet in a sent batch."),
		inFlight:     d("in_flight_batches", "Call batches sent and not yet acknowledged."),
		unacked:      d("unacked_calls", "Calls queued or in flight, lost if the agent dies now."),
		connected:    d("connected", "1 when a stream to the controller is open."),
		capturing:    d("capturing", "1 when a capture is running."),
		rtt:          d("last_ack_rtt_seconds", "Round trip of the latest acknowledged batch."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.packets, c.bytes, c.kernelDrops, c.queueDrops, c.parseErrors,
		c.callsCaptured, c.callsAcked, c.batchesAcked, c.batchesResent,
		c.duplicates, c.reconnects,
		c.evicted, c.rejected, c.droppedBytes, c.memRefused,
		c.queueDepth, c.inFlight, c.unacked, c.connected, c.capturing, c.rtt,
		c.decodeMemory, c.decodeBudget,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it takes one Snapshot.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Snapshot()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(c.packets, s.Packets)
	counter(c.bytes, s.Bytes)
	counter(c.kernelDrops, s.KernelDrops)
	for reason, n := range s.QueueDropsByReason {
		counter(c.queueDrops, n, reason)
	}
	counter(c.parseErrors, s.ParseErrors)
	counter(c.callsCaptured, s.CallsCaptured)
	counter(c.callsAcked, s.CallsAcked)
	counter(c.batchesAcked, s.BatchesAcked)
	counter(c.batchesResent, s.BatchesResent)
	counter(c.duplicates, s.Duplicates)
	counter(c.reconnects, s.Reconnects)
	counter(c.evicted, s.ConnectionsEvicted)
	counter(c.rejected, s.ConnectionsRejected)
	counter(c.droppedBytes, s.CapSkippedBytes, "buffer_cap")
	counter(c.droppedBytes, s.EvictedBytes, "evicted")
	counter(c.memRefused, s.MemoryRefused)
	gauge(c.queueDepth, float64(s.QueueDepth))
	gauge(c.inFlight, float64(s.InFlightBatches))
	gauge(c.unacked, float64(s.UnackedCalls))
	gauge(c.connected, boolFloat(s.Connected))
	gauge(c.capturing, boolFloat(s.Capturing))
	gauge(c.rtt, s.LastAckRTT.Seconds())
	gauge(c.decodeMemory, float64(s.DecodeMemory))
	gauge(c.decodeBudget, float64(s.DecodeBudget))
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
