// Package metrics holds the controller's Prometheus metrics: connected
// agents, batch ingest outcomes and latency, the ingest queue, folds of the
// service map edges, errors, and the Go runtime and process collectors, on
// a registry of its own.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// observer mirrors agents.Observer (controller/agents), declared here so
// this package does not import controller/agents.
type observer interface {
	BatchStored(calls int, duplicate bool, took time.Duration)
	BatchFailed(err error)
	IngestQueueInc()
	IngestQueueDec()
}

var _ observer = (*Metrics)(nil)

// Values of the result label of orbweaver_controller_batches_total.
const (
	ResultStored    = "stored"
	ResultDuplicate = "duplicate"
	ResultFailed    = "failed"
)

// Error kinds for Error; BatchFailed counts under ErrorKindIngest. Kinds
// become label values: use a small fixed set.
const (
	ErrorKindIngest   = "ingest"
	ErrorKindEdgeFold = "edge_fold"
)

// Metrics records the controller's metrics. Its methods are safe for
// concurrent use; a nil *Metrics is not usable.
type Metrics struct {
	reg         *prometheus.Registry
	batches     *prometheus.CounterVec
	callsStored prometheus.Counter
	insertTime  prometheus.Histogram
	queueDepth  prometheus.Gauge
	errors      *prometheus.CounterVec
	edgesFolded prometheus.Counter
	foldTime    prometheus.Histogram
}

// New returns the controller's metrics on a new registry. connected reports
// how many agents have a stream open (e.g. (*agents.Registry).Connected); it
// is called at scrape time and must be safe for concurrent use. A nil
// connected reports 0.
func New(connected func() int) *Metrics {
	if connected == nil {
		connected = func() int { return 0 }
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orbweaver_controller_batches_total",
			Help: "Call batches received from agents, by result: stored, duplicate (already stored, acknowledged again) or failed.",
		}, []string{"result"}),
		callsStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orbweaver_controller_calls_stored_total",
			Help: "Calls stored (duplicate batches not counted).",
		}),
		insertTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "orbweaver_controller_batch_insert_seconds",
			Help: "Time to store one call batch, duplicates included.",
			// 1ms, 2.5ms, 5ms, 10ms, ... 10s
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orbweaver_controller_ingest_queue_depth",
			Help: "Call batches received and not yet stored.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orbweaver_controller_errors_total",
			Help: "Errors by kind.",
		}, []string{"kind"}),
		edgesFolded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orbweaver_controller_edges_folded_total",
			Help: "Pending service map edge rows (http_edges_1m_pending) folded into the edge rollups (http_edges_1m, http_edges_10m).",
		}),
		foldTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "orbweaver_controller_edge_fold_seconds",
			Help:    "Time to fold the pending service map edges, failed folds included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
	}
	agents := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "orbweaver_controller_agents_connected",
		Help: "Agents with a stream open.",
	}, func() float64 { return float64(connected()) })

	// Export every result and the known error kind from the start, so
	// rate() and absent() work before the first event.
	for _, r := range []string{ResultStored, ResultDuplicate, ResultFailed} {
		m.batches.WithLabelValues(r)
	}
	m.errors.WithLabelValues(ErrorKindIngest)
	m.errors.WithLabelValues(ErrorKindEdgeFold)

	m.reg.MustRegister(
		agents, m.batches, m.callsStored, m.insertTime, m.queueDepth, m.errors, m.edgesFolded, m.foldTime,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry returns the registry holding the controller's metrics, to
// serve (see internal/metricsserver) or to register more collectors on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// BatchStored records a batch stored (or found already stored when
// duplicate) in took. It implements agents.Observer.
func (m *Metrics) BatchStored(calls int, duplicate bool, took time.Duration) {
	if duplicate {
		m.batches.WithLabelValues(ResultDuplicate).Inc()
	} else {
		m.batches.WithLabelValues(ResultStored).Inc()
		if calls > 0 {
			m.callsStored.Add(float64(calls))
		}
	}
	m.insertTime.Observe(took.Seconds())
}

// BatchFailed records a batch that could not be stored, counting it in
// batches_total{result="failed"} and errors_total{kind="ingest"}. It
// implements agents.Observer.
func (m *Metrics) BatchFailed(error) {
	m.batches.WithLabelValues(ResultFailed).Inc()
	m.errors.WithLabelValues(ErrorKindIngest).Inc()
}

// Error counts one error of kind (a small fixed set of label values, e.g.
// "stream", "config_push").
func (m *Metrics) Error(kind string) {
	m.errors.WithLabelValues(kind).Inc()
}

// IngestQueueInc counts a batch received and waiting to be stored; call
// IngestQueueDec once it is stored or has failed. It implements
// agents.Observer.
func (m *Metrics) IngestQueueInc() { m.queueDepth.Inc() }

// IngestQueueDec undoes one IngestQueueInc. It implements agents.Observer.
func (m *Metrics) IngestQueueDec() { m.queueDepth.Dec() }

// EdgesFolded records a fold of the pending service map edges that folded
// rows in took, or failed with err (counted in
// errors_total{kind="edge_fold"}). It fits store.(*Store).SetFoldObserver.
func (m *Metrics) EdgesFolded(rows int64, took time.Duration, err error) {
	m.foldTime.Observe(took.Seconds())
	if err != nil {
		m.errors.WithLabelValues(ErrorKindEdgeFold).Inc()
		return
	}
	m.edgesFolded.Add(float64(rows))
}
