// Package agent wires the capture agent: packet source → decode pipeline →
// uplink to the controller, under the controller's commands and config.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gopacket/gopacket/layers"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	"github.com/orbweaver/orbweaver/agent/capture"
	"github.com/orbweaver/orbweaver/agent/metrics"
	"github.com/orbweaver/orbweaver/agent/pipeline"
	"github.com/orbweaver/orbweaver/agent/uplink"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/agentconfig"
	"github.com/orbweaver/orbweaver/internal/callconv"
	"github.com/orbweaver/orbweaver/internal/metricsserver"
	"github.com/orbweaver/orbweaver/internal/model"
	"github.com/orbweaver/orbweaver/internal/procstat"
)

// Config is the agent's local configuration (flags). Everything else comes
// from the controller.
type Config struct {
	// Controller is the controller's gRPC address (host:port).
	Controller string
	Name       string
	// Interface to capture on (interface mode); the controller's
	// capture.interface overrides it when set.
	Interface string
	// File switches to file mode: read this pcap/pcapng.
	File string
	// Filter is the BPF filter used until the controller sets one.
	Filter string
	// StateDir keeps the agent id across restarts.
	StateDir string
	// ExitWhenDone (file mode): return once every call of the file is
	// acknowledged by the controller.
	ExitWhenDone bool
	Version      string
	Logger       *slog.Logger
	// DialOptions are added to the controller connection (credentials...).
	// Without any, the connection is plaintext.
	DialOptions []grpc.DialOption
	// Pipeline bounds the decoder's memory; zero means defaults.
	Pipeline pipeline.Config
	// MemoryLimit is the Go runtime's soft memory limit
	// (runtime/debug.SetMemoryLimit). Zero derives it from the
	// configuration each time a capture session starts: the decoder's
	// memory budget (parsing.total_buffer_mib) plus the upload queue's
	// bound (shipping.queue_max_bytes) plus 64 MiB for the rest (runtime,
	// batches in flight, gRPC buffers, garbage between collections), so
	// that under hostile traffic the garbage collector keeps the heap near
	// what those bounds allow instead of letting it grow to twice the live
	// heap. Negative leaves the runtime's limit alone, as does zero when
	// the GOMEMLIMIT environment variable is set.
	MemoryLimit int64
	// MetricsListen, when set, serves Prometheus /metrics there.
	MetricsListen string
	// Keepalive is how long the stream may stay silent before the agent
	// pings the controller (default 20 s; the controller refuses pings
	// more often than every 5 s).
	Keepalive time.Duration
}

// Agent is a running agent. Build it with New, then Run it.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	id     string
	bootID string
	mode   orbweaverv1.AgentMode
	up     *uplink.Uplink

	mu        sync.Mutex
	conf      *orbweaverv1.AgentConfig // last config accepted from the controller
	wantOn    bool                     // capture requested by the controller
	lastFile  string                   // file of the latest session ("" for live)
	session   *captureSession
	fileDone  chan error // file mode: receives the read result once
	fileSent  bool
	captErr   string
	captStart time.Time

	base     pipeline.Stats // counters of finished capture sessions
	kdrops   atomic.Uint64  // kernel drops of finished sessions
	current  atomic.Pointer[captureSession]
	sessions atomic.Uint64
	changed  chan struct{} // cap 1: desired capture state changed
	hbNow    chan struct{} // cap 1: send a heartbeat now

	previous *orbweaverv1.PreviousBoot // what the last process left, or nil

	// Owned by the heartbeat loop.
	sampler           *procstat.Sampler
	pktRate, byteRate procstat.Rate
}

type captureSession struct {
	file   string // the file read, "" for a live capture
	cancel context.CancelFunc
	done   chan struct{}
	pipe   *pipeline.Pipeline
	handle atomic.Pointer[capture.Handle]
}

// New prepares an agent: it loads (or creates) its identity.
func New(cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Controller == "" {
		return nil, errors.New("controller address is required (--controller)")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("state dir is required (--state-dir)")
	}
	id, err := loadOrCreateID(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:      cfg,
		id:       id,
		bootID:   uuid.NewString(),
		mode:     orbweaverv1.AgentMode_AGENT_MODE_INTERFACE,
		conf:     agentconfig.Normalize(nil),
		fileDone: make(chan error, 1),
		changed:  make(chan struct{}, 1),
		hbNow:    make(chan struct{}, 1),
		sampler:  procstat.NewSampler(),
	}
	if cfg.File != "" {
		a.mode = orbweaverv1.AgentMode_AGENT_MODE_FILE
	}
	if cfg.Filter != "" {
		a.conf.Capture.BpfFilter = cfg.Filter
	}
	a.log = cfg.Logger.With("agent_id", id)
	prev, ok, err := readBootRecord(cfg.StateDir)
	if err != nil {
		a.log.Warn("previous boot record unreadable", "err", err)
	}
	if ok {
		a.previous = prev.proto()
		if !prev.CleanExit && prev.UnackedCalls > 0 {
			a.log.Warn("the previous agent process did not exit cleanly; its unacknowledged calls are lost",
				"previous_boot_id", prev.BootID, "unacked_calls", prev.UnackedCalls, "as_of", prev.AsOf)
		}
	}
	return a, nil
}

// ID is the agent's stable id.
func (a *Agent) ID() string { return a.id }

// Run connects to the controller and captures as told until ctx ends (or,
// with ExitWhenDone, until the file's calls are all acknowledged).
func (a *Agent) Run(ctx context.Context) error {
	opts := append([]grpc.DialOption{}, a.cfg.DialOptions...)
	if len(opts) == 0 {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	// Ping the controller when the stream is quiet so that a silent network
	// cut (no RST) is noticed and the agent reconnects instead of waiting
	// for TCP to give up. The controller permits pings every 5 s.
	ka := a.cfg.Keepalive
	if ka <= 0 {
		ka = 20 * time.Second
	}
	opts = append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: ka, Timeout: ka / 2, PermitWithoutStream: true}))
	conn, err := grpc.NewClient(a.cfg.Controller, opts...)
	if err != nil {
		return fmt.Errorf("controller %q: %w", a.cfg.Controller, err)
	}
	defer conn.Close()

	lim := limitsOf(a.conf)
	a.up = uplink.New(uplink.Config{
		Conn:    conn,
		Hello:   a.hello,
		Handler: handler{a},
		Logger:  a.log,
		AgentID: a.id,
		BootID:  a.bootID,
		Limits:  lim,
	})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	upCtx, upCancel := context.WithCancel(context.Background())
	wg.Add(2)
	go func() { defer wg.Done(); _ = a.up.Run(upCtx) }()
	go func() { defer wg.Done(); a.heartbeats(upCtx) }()
	defer func() { upCancel(); wg.Wait() }()
	if a.cfg.MetricsListen != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := metricsserver.Run(upCtx, a.cfg.MetricsListen, metrics.New(a).Registry(), a.log); err != nil {
				a.log.Error("metrics server", "err", err)
			}
		}()
	}

	a.log.Info("agent starting", "name", a.cfg.Name, "controller", a.cfg.Controller, "mode", a.mode.String(), "boot_id", a.bootID)
	result := make(chan error, 1)
	go func() { result <- a.captureManager(ctx) }()

	var runErr error
	if a.cfg.ExitWhenDone && a.mode == orbweaverv1.AgentMode_AGENT_MODE_FILE {
		select {
		case runErr = <-a.fileDone:
		case <-ctx.Done():
		}
	} else {
		<-ctx.Done()
	}
	cancel()
	<-result // capture stopped, pipeline flushed into the uplink

	// Ship what is left, within a bound.
	dctx, dcancel := context.WithTimeout(context.Background(), a.drainTimeout())
	defer dcancel()
	if err := a.up.Drain(dctx); err != nil {
		a.log.Error("shutting down with unacknowledged calls", "err", err)
		if runErr == nil {
			runErr = err
		}
	}
	upCancel()
	wg.Wait() // the journal is no longer written
	if err := writeBootRecord(a.cfg.StateDir, a.bootRecordNow(true)); err != nil {
		a.log.Warn("boot record", "err", err)
	}
	st := a.up.Stats()
	a.log.Info("agent stopped", "calls_acknowledged", st.CallsSent, "queue_drops", st.QueueDrops, "unacknowledged_calls", st.UnackedCalls)
	return runErr
}

func (a *Agent) drainTimeout() time.Duration {
	if a.cfg.ExitWhenDone {
		return 5 * time.Minute
	}
	return 5 * time.Second
}

func limitsOf(c *orbweaverv1.AgentConfig) uplink.Limits {
	s := c.GetShipping()
	return uplink.Limits{
		BatchMaxCalls: int(s.GetBatchMaxCalls()),
		BatchMaxDelay: time.Duration(s.GetBatchMaxDelayMs()) * time.Millisecond,
		QueueMaxCalls: int(s.GetQueueMaxCalls()),
		QueueMaxBytes: int64(s.GetQueueMaxBytes()),
		MaxInFlight:   int(s.GetMaxInFlightBatches()),
	}
}

func (a *Agent) hello() *orbweaverv1.Hello {
	host, _ := os.Hostname()
	name := a.cfg.Name
	if name == "" {
		name = host
	}
	h := &orbweaverv1.Hello{
		AgentId:      a.id,
		BootId:       a.bootID,
		Name:         name,
		Hostname:     host,
		Version:      a.cfg.Version,
		Mode:         a.mode,
		PreviousBoot: a.previous,
	}
	if ifs, err := capture.ListInterfaces(); err == nil {
		for _, i := range ifs {
			h.Interfaces = append(h.Interfaces, &orbweaverv1.NetworkInterface{
				Name: i.Name, Addresses: i.Addresses, Description: i.Description, Loopback: i.Loopback, Up: i.Up,
			})
		}
	} else {
		a.log.Warn("list interfaces", "err", err)
	}
	cur := a.current.Load()
	h.Capturing = cur != nil && cur.handle.Load() != nil
	return h
}

// handler adapts the agent to uplink.Handler.
type handler struct{ a *Agent }

func (h handler) Welcome(w *orbweaverv1.Welcome) *orbweaverv1.ConfigAck {
	ack := h.a.applyConfig(w.GetConfig())
	h.a.setWanted(w.GetCapture())
	return ack
}

func (h handler) Config(c *orbweaverv1.ConfigUpdate) *orbweaverv1.ConfigAck {
	return h.a.applyConfig(c)
}

func (h handler) Command(c *orbweaverv1.Command) {
	switch c.GetKind() {
	case orbweaverv1.Command_KIND_START_CAPTURE:
		h.a.setWanted(true)
	case orbweaverv1.Command_KIND_STOP_CAPTURE:
		h.a.setWanted(false)
	default:
		h.a.log.Warn("unknown command", "kind", c.GetKind().String())
	}
}

// applyConfig checks a config against this host and takes it; a capture
// running with other capture settings is restarted.
func (a *Agent) applyConfig(u *orbweaverv1.ConfigUpdate) *orbweaverv1.ConfigAck {
	next := agentconfig.Normalize(u.GetConfig())
	if next.Capture.BpfFilter == "" && a.cfg.Filter != "" && u.GetConfig().GetCapture().GetBpfFilter() == "" {
		next.Capture.BpfFilter = a.cfg.Filter
	}
	env := agentconfig.Env{CompileFilter: compileFilter}
	if ifs, err := capture.ListInterfaces(); err == nil {
		for _, i := range ifs {
			env.Interfaces = append(env.Interfaces, i.Name)
		}
	}
	if verr := agentconfig.Validate(next, env); verr != nil {
		a.log.Error("config rejected", "version", u.GetVersion(), "err", verr)
		return &orbweaverv1.ConfigAck{Version: u.GetVersion(), Error: verr.Error()}
	}
	a.mu.Lock()
	changed := !proto.Equal(a.conf.GetCapture(), next.GetCapture()) || !proto.Equal(a.conf.GetParsing(), next.GetParsing())
	// A live capture restarts with the new settings. A file being read is
	// not read again from the start (its calls would be sent twice): the
	// new settings apply from the next StartCapture.
	newFile, _ := a.sourceOf(next.GetCapture())
	var restart bool
	switch {
	case !changed:
	case a.session != nil:
		restart = a.session.file == "" || a.session.file != newFile
	default: // idle (stopped, failed, or a file read to its end)
		restart = a.wantOn && (newFile == "" || newFile != a.lastFile)
	}
	a.conf = next
	a.mu.Unlock()
	a.up.SetLimits(limitsOf(next))
	if restart {
		a.kick()
	}
	a.log.Info("config applied", "version", u.GetVersion(), "restart_capture", restart)
	return &orbweaverv1.ConfigAck{Version: u.GetVersion(), Effective: a.effective(next)}
}

// effective is cfg with the agent's own choices filled in: what it really
// runs with.
func (a *Agent) effective(cfg *orbweaverv1.AgentConfig) *orbweaverv1.AgentConfig {
	out := proto.Clone(cfg).(*orbweaverv1.AgentConfig)
	file, iface := a.sourceOf(out.GetCapture())
	if file != "" {
		out.Capture.Mode, out.Capture.FilePath = "file", file
	} else {
		out.Capture.Mode, out.Capture.Interface = "interface", iface
	}
	return out
}

func compileFilter(expr string, snaplen int) error {
	return capture.ValidateFilter(layers.LinkTypeEthernet, snaplen, expr)
}

func (a *Agent) setWanted(on bool) {
	a.mu.Lock()
	changed := a.wantOn != on
	a.wantOn = on
	a.mu.Unlock()
	if changed {
		a.log.Info("capture requested", "capture", on)
		a.kick()
	}
}

// kick tells the capture manager to reconcile.
func (a *Agent) kick() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// captureManager starts and stops capture sessions to match what the
// controller wants, restarting on capture config changes. It returns when
// ctx ends, after the last session is flushed.
func (a *Agent) captureManager(ctx context.Context) error {
	defer a.stopSession()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.changed:
		}
		a.stopSession()
		a.mu.Lock()
		on, conf := a.wantOn, a.conf
		a.mu.Unlock()
		if on {
			a.startSession(ctx, conf)
		}
	}
}

// sourceOf decides what a session reads: the config's capture.mode and
// file_path win over the agent's flags.
func (a *Agent) sourceOf(c *orbweaverv1.CaptureConfig) (file, iface string) {
	switch {
	case c.GetMode() == "file":
		return c.GetFilePath(), ""
	case c.GetMode() == "interface":
	case a.mode == orbweaverv1.AgentMode_AGENT_MODE_FILE:
		return a.cfg.File, ""
	}
	iface = c.GetInterface()
	if iface == "" {
		iface = a.cfg.Interface
	}
	return "", iface
}

func (a *Agent) startSession(ctx context.Context, conf *orbweaverv1.AgentConfig) {
	file, iface := a.sourceOf(conf.GetCapture())
	flagFile := file != "" && file == a.cfg.File && a.mode == orbweaverv1.AgentMode_AGENT_MODE_FILE
	if flagFile {
		a.mu.Lock()
		sent := a.fileSent
		a.mu.Unlock()
		if sent && a.cfg.ExitWhenDone {
			return // the file was read; we are only waiting for acks
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &captureSession{file: file, cancel: cancel, done: make(chan struct{})}
	pc := a.pipelineConfig(conf)
	a.applyMemoryLimit(pc, conf)
	s.pipe = pipeline.New(pc, a.emitter(sctx, file != ""))
	a.current.Store(s)
	a.mu.Lock()
	a.session = s
	a.lastFile = file
	a.captErr = ""
	a.mu.Unlock()
	go func() {
		defer close(s.done)
		err := a.capture(sctx, s, conf.GetCapture(), file, iface)
		s.pipe.Close()
		if err != nil {
			a.log.Error("capture stopped", "err", err)
		} else if file != "" {
			a.log.Info("file read", "file", file, "packets", s.pipe.Stats().Packets, "calls", s.pipe.Stats().Calls)
		}
		a.mu.Lock()
		if err != nil {
			a.captErr = err.Error()
		}
		a.mu.Unlock()
		if flagFile {
			a.finishFile(err)
		}
		a.retire(s)
	}()
}

// pipelineConfig is the decoder's configuration for a session: the
// agent's memory bounds and the controller's parsing settings.
func (a *Agent) pipelineConfig(conf *orbweaverv1.AgentConfig) pipeline.Config {
	pc := a.cfg.Pipeline
	p := conf.GetParsing()
	if v := p.GetIdleTimeoutSeconds(); v > 0 {
		pc.IdleTimeout = time.Duration(v) * time.Second
	}
	if v := p.GetStreamBufferKib(); v > 0 {
		pc.MaxStreamBufferBytes = int(v) << 10
	}
	if v := p.GetTotalBufferMib(); v > 0 {
		pc.MaxTotalBufferBytes = int64(v) << 20
	}
	if v := p.GetMaxConnections(); v > 0 {
		pc.MaxConnections = int(v)
	}
	parsing, err := pipeline.ParsingFromProto(p)
	if err != nil {
		// Validated before the config was accepted; keep going with what
		// was valid rather than not capturing at all.
		a.log.Error("parsing config", "err", err)
	}
	salt := conf.GetParsing().GetRedactionSalt()
	if salt == "" {
		salt = a.id
	}
	parsing.Salt = []byte(salt)
	pc.Parsing = parsing
	return pc
}

// memoryHeadroom is the part of the derived soft memory limit beyond the
// configured bounds (see Config.MemoryLimit).
const memoryHeadroom = 64 << 20

// applyMemoryLimit sets the runtime's soft memory limit for a session's
// configuration, as Config.MemoryLimit says.
func (a *Agent) applyMemoryLimit(pc pipeline.Config, conf *orbweaverv1.AgentConfig) {
	lim := a.cfg.MemoryLimit
	if lim < 0 || lim == 0 && os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	if lim == 0 {
		lim = derivedMemoryLimit(pc, conf)
	}
	if prev := debug.SetMemoryLimit(lim); prev != lim {
		a.log.Info("runtime memory limit", "bytes", lim)
	}
}

// derivedMemoryLimit is the soft memory limit for a decoder configuration
// and an agent configuration: the bounds on what grows with traffic plus
// headroom.
func derivedMemoryLimit(pc pipeline.Config, conf *orbweaverv1.AgentConfig) int64 {
	budget := pc.MaxTotalBufferBytes
	if budget <= 0 {
		budget = pipeline.DefaultConfig().MaxTotalBufferBytes
	}
	queue := int64(conf.GetShipping().GetQueueMaxBytes())
	if queue <= 0 {
		queue = int64(agentconfig.Default().GetShipping().GetQueueMaxBytes())
	}
	return budget + queue + memoryHeadroom
}

// retire folds a finished session's counters into the totals.
func (a *Agent) retire(s *captureSession) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.current.CompareAndSwap(s, nil) {
		return
	}
	addStats(&a.base, s.pipe.Stats())
	if h := s.handle.Load(); h != nil {
		a.kdrops.Add(h.Stats().KernelDrops)
	}
	a.session = nil
	a.heartbeatNow()
}

func (a *Agent) finishFile(err error) {
	a.mu.Lock()
	first := !a.fileSent
	a.fileSent = true
	a.mu.Unlock()
	if first {
		a.fileDone <- err
	}
}

func (a *Agent) stopSession() {
	a.mu.Lock()
	s := a.session
	a.mu.Unlock()
	if s == nil {
		return
	}
	s.cancel()
	<-s.done
}

// capture runs one capture session until ctx ends or the source is done.
func (a *Agent) capture(ctx context.Context, s *captureSession, c *orbweaverv1.CaptureConfig, file, iface string) error {
	var (
		h   *capture.Handle
		err error
	)
	switch {
	case file != "":
		h, err = capture.OpenFile(file, c.GetBpfFilter())
	case iface == "":
		return errors.New("capture.interface: no interface configured (set it in the config or with --interface)")
	default:
		h, err = capture.OpenLive(capture.LiveConfig{
			Interface:     iface,
			Filter:        c.GetBpfFilter(),
			Snaplen:       int(c.GetSnaplen()),
			Promiscuous:   c.GetPromiscuous(),
			BufferSizeMiB: int(c.GetBufferSizeMib()),
		})
	}
	if err != nil {
		return err
	}
	defer h.Close()
	a.mu.Lock()
	a.captStart = time.Now()
	a.mu.Unlock()
	s.handle.Store(h)
	a.sessions.Add(1)
	a.heartbeatNow() // capturing from now on
	a.log.Info("capture started", "source", file+iface, "filter", c.GetBpfFilter())
	return runCapture(ctx, h, s.pipe)
}

// runCapture feeds a handle into a pipeline, ticking its clock about every
// 100 ms of capture time (and of wall time while the source is idle).
func runCapture(ctx context.Context, h *capture.Handle, p *pipeline.Pipeline) error {
	lt := h.LinkType()
	var lastTick time.Time
	return h.Run(ctx, func(data []byte, ts time.Time) {
		p.Packet(lt, data, ts)
		if ts.Sub(lastTick) >= 100*time.Millisecond {
			lastTick = ts
			p.Tick(ts)
		}
	}, func(now time.Time) {
		p.Tick(now)
	})
}

// emitter returns the pipeline's call sink: live capture never blocks (a
// full queue drops and counts), file reading waits for room.
func (a *Agent) emitter(ctx context.Context, file bool) func(*model.HTTPCall) {
	if file {
		return func(c *model.HTTPCall) {
			_ = a.up.EnqueueWait(ctx, callconv.ToProto(c))
		}
	}
	return func(c *model.HTTPCall) {
		a.up.Enqueue(callconv.ToProto(c))
	}
}

func (a *Agent) heartbeatNow() {
	select {
	case a.hbNow <- struct{}{}:
	default:
	}
}

// heartbeats sends status at the configured interval and on every capture
// state change.
func (a *Agent) heartbeats(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	journal := time.NewTicker(time.Second)
	defer journal.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-journal.C:
			if err := writeBootRecord(a.cfg.StateDir, a.bootRecordNow(false)); err != nil {
				a.log.Warn("boot record", "err", err)
			}
			continue
		case <-t.C:
		case <-a.hbNow:
		}
		a.up.SetHeartbeat(a.heartbeat())
		a.mu.Lock()
		iv := time.Duration(a.conf.GetHeartbeatIntervalSeconds()) * time.Second
		a.mu.Unlock()
		t.Reset(iv)
	}
}

// Stats are the agent's cumulative counters.
type Stats struct {
	// Sessions counts capture sessions whose source was opened (a config
	// change that restarts the capture adds one).
	Sessions    uint64
	Pipeline    pipeline.Stats
	KernelDrops uint64
	Uplink      uplink.Stats
	Capturing   bool
}

// Stats returns a snapshot of the agent's counters.
func (a *Agent) Stats() Stats {
	a.mu.Lock()
	ps := a.base
	a.mu.Unlock()
	kd := a.kdrops.Load()
	cur := a.current.Load()
	if cur != nil {
		cs := cur.pipe.Stats()
		addStats(&ps, cs)
		// Gauges are the current session's.
		ps.ActiveConnections, ps.BufferedBytes = cs.ActiveConnections, cs.BufferedBytes
		ps.MemoryBytes, ps.MemoryBudgetBytes = cs.MemoryBytes, cs.MemoryBudgetBytes
		if h := cur.handle.Load(); h != nil {
			kd += h.Stats().KernelDrops
		}
	}
	var us uplink.Stats
	if a.up != nil {
		us = a.up.Stats()
	}
	return Stats{Sessions: a.sessions.Load(), Pipeline: ps, KernelDrops: kd, Uplink: us, Capturing: cur != nil && cur.handle.Load() != nil}
}

// heartbeat builds the status message; only the heartbeat loop calls it
// (it advances the CPU and rate intervals).
func (a *Agent) heartbeat() *orbweaverv1.Heartbeat {
	st := a.Stats()
	now := time.Now()
	a.mu.Lock()
	cerr, start := a.captErr, a.captStart
	a.mu.Unlock()
	hb := &orbweaverv1.Heartbeat{
		TimeNs:             now.UnixNano(),
		Capturing:          st.Capturing,
		Packets:            st.Pipeline.Packets,
		Bytes:              st.Pipeline.Bytes,
		KernelDrops:        st.KernelDrops,
		QueueDrops:         st.Uplink.QueueDrops,
		QueueDropsByReason: st.Uplink.QueueDropsByReason,
		ParseErrors:        st.Pipeline.DecodeErrors + st.Pipeline.HTTPParseErrors,
		CallsSent:          st.Uplink.CallsSent,
		CallsCaptured:      st.Pipeline.Calls,
		QueueDepth:         uint64(st.Uplink.QueueDepth),
		InFlightBatches:    uint32(st.Uplink.InFlight),
		UnackedCalls:       uint64(st.Uplink.UnackedCalls),
		LastAckRttUs:       st.Uplink.LastAckRTT.Microseconds(),
		BytesUploaded:      st.Uplink.BytesUploaded,
		CaptureError:       cerr,
		PacketsPerSecond:   a.pktRate.Update(st.Pipeline.Packets, now),
		BytesPerSecond:     a.byteRate.Update(st.Pipeline.Bytes, now),
	}
	if st.Capturing && !start.IsZero() {
		hb.CaptureStartNs = start.UnixNano()
	}
	if ps, err := a.sampler.Sample(); err == nil {
		hb.CpuPercent, hb.RssBytes = ps.CPUPercent, ps.RSSBytes
	}
	return hb
}

// Snapshot implements metrics.Source for the agent's /metrics.
func (a *Agent) Snapshot() metrics.Snapshot {
	st := a.Stats()
	return metrics.Snapshot{
		Packets:             st.Pipeline.Packets,
		Bytes:               st.Pipeline.Bytes,
		KernelDrops:         st.KernelDrops,
		QueueDropsByReason:  st.Uplink.QueueDropsByReason,
		ParseErrors:         st.Pipeline.DecodeErrors + st.Pipeline.HTTPParseErrors,
		CallsCaptured:       st.Pipeline.Calls,
		CallsAcked:          st.Uplink.CallsSent,
		BatchesAcked:        st.Uplink.BatchesAcked,
		BatchesResent:       st.Uplink.BatchesResent,
		Duplicates:          st.Uplink.Duplicates,
		Reconnects:          st.Uplink.Reconnects,
		QueueDepth:          st.Uplink.QueueDepth,
		InFlightBatches:     st.Uplink.InFlight,
		UnackedCalls:        st.Uplink.UnackedCalls,
		Connected:           st.Uplink.Connected,
		Capturing:           st.Capturing,
		LastAckRTT:          st.Uplink.LastAckRTT,
		ConnectionsEvicted:  st.Pipeline.EvictedConnections,
		ConnectionsRejected: st.Pipeline.ConnectionsRejected,
		CapSkippedBytes:     st.Pipeline.CapDroppedBytes,
		EvictedBytes:        st.Pipeline.EvictedBytes,
		MemoryRefused:       st.Pipeline.HTTPMemoryRefused,
		DecodeMemory:        st.Pipeline.MemoryBytes,
		DecodeBudget:        st.Pipeline.MemoryBudgetBytes,
	}
}

func addStats(dst *pipeline.Stats, s pipeline.Stats) {
	dst.Packets += s.Packets
	dst.Bytes += s.Bytes
	dst.DecodeErrors += s.DecodeErrors
	dst.NonTCP += s.NonTCP
	dst.Connections += s.Connections
	dst.ConnectionsRejected += s.ConnectionsRejected
	dst.Calls += s.Calls
	dst.HTTPParseErrors += s.HTTPParseErrors
	dst.Retransmissions += s.Retransmissions
	dst.OutOfOrder += s.OutOfOrder
	dst.GapBytes += s.GapBytes
	dst.CapDroppedBytes += s.CapDroppedBytes
	dst.EvictedConnections += s.EvictedConnections
	dst.EvictedBytes += s.EvictedBytes
	dst.HTTPMemoryRefused += s.HTTPMemoryRefused
}
