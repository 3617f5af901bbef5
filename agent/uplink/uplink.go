// Package uplink owns the agent's one long-lived stream to the controller:
// it batches calls, keeps every batch until the controller acknowledges it
// (resending after a reconnect), coalesces status messages, and reconnects
// with exponential backoff and jitter.
package uplink

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

// Handler receives what the controller sends. Its methods are called from
// the uplink's goroutine one at a time and must not block for long. The
// returned ConfigAck (when non-nil) is sent back to the controller.
type Handler interface {
	Welcome(w *orbweaverv1.Welcome) *orbweaverv1.ConfigAck
	Config(c *orbweaverv1.ConfigUpdate) *orbweaverv1.ConfigAck
	Command(c *orbweaverv1.Command)
}

// Config tells the uplink where to connect and how to batch.
type Config struct {
	// Conn is the client connection to the controller (grpc.NewClient).
	Conn grpc.ClientConnInterface
	// Hello builds the hello message at each (re)connect.
	Hello   func() *orbweaverv1.Hello
	Handler Handler
	Logger  *slog.Logger

	AgentID, BootID string
	Limits          Limits

	// MinBackoff and MaxBackoff bound the reconnect delay (defaults 200 ms
	// and 15 s). The delay doubles after each failed attempt and is drawn
	// uniformly from [delay/2, delay] (jitter).
	MinBackoff, MaxBackoff time.Duration
}

// Limits are the batching and buffering bounds; they may change at run time
// through SetLimits.
type Limits struct {
	BatchMaxCalls int
	BatchMaxDelay time.Duration
	// QueueMaxCalls bounds the calls waiting to be put in a batch.
	QueueMaxCalls int
	// QueueMaxBytes bounds the encoded size of those calls.
	QueueMaxBytes int64
	// MaxInFlight bounds the batches sent and not yet acknowledged.
	MaxInFlight int
}

// Drop reasons, as reported in Stats.QueueDropsByReason.
const (
	DropQueueFullCalls = "queue_full_calls"
	DropQueueFullBytes = "queue_full_bytes"
)

func (l Limits) withDefaults() Limits {
	if l.BatchMaxCalls <= 0 {
		l.BatchMaxCalls = 1000
	}
	if l.BatchMaxDelay <= 0 {
		l.BatchMaxDelay = 200 * time.Millisecond
	}
	if l.QueueMaxCalls <= 0 {
		l.QueueMaxCalls = 100000
	}
	if l.MaxInFlight <= 0 {
		l.MaxInFlight = 8
	}
	if l.QueueMaxBytes <= 0 {
		l.QueueMaxBytes = 64 << 20
	}
	return l
}

// Stats are cumulative counters and current gauges.
type Stats struct {
	QueueDepth         int
	InFlight           int
	QueueDrops         uint64 // sum of QueueDropsByReason
	QueueDropsByReason map[string]uint64
	QueueBytes         int64
	CallsSent          uint64 // calls in batches the controller acknowledged
	BatchesAcked       uint64
	BatchesResent      uint64
	Duplicates         uint64 // batches the controller had already stored
	LastAckRTT         time.Duration
	Connected          bool
	Reconnects         uint64
	UnackedCalls       int // calls queued or in flight (lost if the process dies now)
	BytesUploaded      uint64
	ConnectAttempts    uint64
}

type batch struct {
	seq    uint64
	msg    *orbweaverv1.AgentMessage
	calls  int
	size   int
	sentAt time.Time
	sent   bool
}

// Uplink is safe for concurrent use: Enqueue, SetHeartbeat and Stats may be
// called from any goroutine while Run runs.
type Uplink struct {
	cfg Config
	log *slog.Logger

	mu          sync.Mutex
	limits      Limits
	queue       []*orbweaverv1.HttpCall
	queueSizes  []int64 // encoded size of each queued call, parallel to queue
	queueBytes  int64
	queueSince  time.Time // enqueue time of queue[0]
	drops       map[string]uint64
	unacked     []*batch // ordered by seq
	nextSeq     uint64
	heartbeat   *orbweaverv1.Heartbeat
	flushNow    bool
	spaceWaiter chan struct{} // closed when queue space frees up
	drainWaiter chan struct{} // closed when queue and unacked are empty

	wake chan struct{} // cap 1: new work for the send loop

	callsSent     atomic.Uint64
	batchesAcked  atomic.Uint64
	batchesResent atomic.Uint64
	duplicates    atomic.Uint64
	lastRTT       atomic.Int64
	connected     atomic.Bool
	reconnects    atomic.Uint64
	bytesUploaded atomic.Uint64
	attempts      atomic.Uint64
}

// New returns an uplink; call Run to connect.
func New(cfg Config) *Uplink {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 15 * time.Second
	}
	return &Uplink{
		cfg:    cfg,
		log:    cfg.Logger,
		limits: cfg.Limits.withDefaults(),
		wake:   make(chan struct{}, 1),
	}
}

// SetLimits changes batching and buffering bounds. Calls already queued
// beyond a smaller queue bound are kept.
func (u *Uplink) SetLimits(l Limits) {
	u.mu.Lock()
	u.limits = l.withDefaults()
	u.mu.Unlock()
	u.poke()
}

func (u *Uplink) poke() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// Enqueue adds a call without blocking. When the queue is full the call is
// dropped, counted in Stats().QueueDrops, and Enqueue returns false.
func (u *Uplink) Enqueue(c *orbweaverv1.HttpCall) bool {
	size := int64(proto.Size(c))
	u.mu.Lock()
	defer u.mu.Unlock()
	if reason := u.full(size); reason != "" {
		if u.drops == nil {
			u.drops = make(map[string]uint64)
		}
		u.drops[reason]++
		return false
	}
	u.push(c, size)
	return true
}

// full says why a call of size bytes does not fit (under u.mu), or "".
// A call alone larger than the byte bound is still taken into an empty
// queue, so that it is not dropped forever.
func (u *Uplink) full(size int64) string {
	switch {
	case len(u.queue) >= u.limits.QueueMaxCalls:
		return DropQueueFullCalls
	case len(u.queue) > 0 && u.queueBytes+size > u.limits.QueueMaxBytes:
		return DropQueueFullBytes
	}
	return ""
}

// EnqueueWait adds a call, waiting for room when the queue is full (used
// when reading files, where waiting loses nothing).
func (u *Uplink) EnqueueWait(ctx context.Context, c *orbweaverv1.HttpCall) error {
	size := int64(proto.Size(c))
	for {
		u.mu.Lock()
		if u.full(size) == "" {
			u.push(c, size)
			u.mu.Unlock()
			return nil
		}
		if u.spaceWaiter == nil {
			u.spaceWaiter = make(chan struct{})
		}
		w := u.spaceWaiter
		u.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w:
		}
	}
}

// push appends under u.mu.
func (u *Uplink) push(c *orbweaverv1.HttpCall, size int64) {
	if len(u.queue) == 0 {
		u.queueSince = time.Now()
	}
	u.queue = append(u.queue, c)
	u.queueSizes = append(u.queueSizes, size)
	u.queueBytes += size
	if len(u.queue) == u.limits.BatchMaxCalls || len(u.queue) == 1 {
		u.poke()
	}
}

// SetHeartbeat replaces the pending heartbeat (status is coalesced: only the
// latest is sent).
func (u *Uplink) SetHeartbeat(hb *orbweaverv1.Heartbeat) {
	u.mu.Lock()
	u.heartbeat = hb
	u.mu.Unlock()
	u.poke()
}

// Drain asks for every queued call to be sent now (without waiting for the
// batch delay) and waits until all of them are acknowledged or ctx ends.
func (u *Uplink) Drain(ctx context.Context) error {
	for {
		u.mu.Lock()
		if len(u.queue) == 0 && len(u.unacked) == 0 {
			u.mu.Unlock()
			return nil
		}
		u.flushNow = true
		if u.drainWaiter == nil {
			u.drainWaiter = make(chan struct{})
		}
		w := u.drainWaiter
		u.mu.Unlock()
		u.poke()
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain: %d calls not acknowledged: %w", u.Stats().UnackedCalls, ctx.Err())
		case <-w:
		}
	}
}

// Stats returns a snapshot.
func (u *Uplink) Stats() Stats {
	u.mu.Lock()
	depth, inflight, qbytes := len(u.queue), 0, u.queueBytes
	var drops uint64
	byReason := make(map[string]uint64, len(u.drops))
	for k, v := range u.drops {
		byReason[k] = v
		drops += v
	}
	unackedCalls := depth
	for _, b := range u.unacked {
		if b.sent {
			inflight++
		}
		unackedCalls += b.calls
	}
	u.mu.Unlock()
	return Stats{
		QueueDepth:         depth,
		InFlight:           inflight,
		QueueDrops:         drops,
		QueueDropsByReason: byReason,
		QueueBytes:         qbytes,
		CallsSent:          u.callsSent.Load(),
		BatchesAcked:       u.batchesAcked.Load(),
		BatchesResent:      u.batchesResent.Load(),
		Duplicates:         u.duplicates.Load(),
		LastAckRTT:         time.Duration(u.lastRTT.Load()),
		Connected:          u.connected.Load(),
		Reconnects:         u.reconnects.Load(),
		UnackedCalls:       unackedCalls,
		BytesUploaded:      u.bytesUploaded.Load(),
		ConnectAttempts:    u.attempts.Load(),
	}
}

// Run connects and keeps the stream up until ctx ends. It returns nil on
// cancellation.
func (u *Uplink) Run(ctx context.Context) error {
	delay := u.cfg.MinBackoff
	for {
		u.attempts.Add(1)
		start := time.Now()
		err := u.session(ctx)
		u.connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 10*time.Second {
			delay = u.cfg.MinBackoff // the session was healthy: start over
		}
		wait := delay/2 + rand.N(delay/2+1)
		u.log.Warn("controller stream lost; reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		delay = min(delay*2, u.cfg.MaxBackoff)
		u.reconnects.Add(1)
	}
}

type inbound struct {
	msg *orbweaverv1.ControllerMessage
	err error
}

// session runs one stream: hello, welcome, then the send loop. Only this
// goroutine calls Send; one goroutine only calls Recv.
func (u *Uplink) session(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client := orbweaverv1.NewAgentServiceClient(u.cfg.Conn)
	stream, err := client.Connect(sctx)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	if err := stream.Send(&orbweaverv1.AgentMessage{Msg: &orbweaverv1.AgentMessage_Hello{Hello: u.cfg.Hello()}}); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	in := make(chan inbound, 64)
	go func() {
		for {
			m, err := stream.Recv()
			select {
			case in <- inbound{m, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	// Wait for the welcome before sending anything else.
	select {
	case <-ctx.Done():
		return nil
	case r := <-in:
		if r.err != nil {
			return fmt.Errorf("await welcome: %w", r.err)
		}
		w := r.msg.GetWelcome()
		if w == nil {
			return fmt.Errorf("await welcome: controller sent %T first", r.msg.GetMsg())
		}
		u.connected.Store(true)
		u.log.Info("connected to controller", "capture", w.GetCapture(), "config_version", w.GetConfig().GetVersion())
		if ack := u.cfg.Handler.Welcome(w); ack != nil {
			if err := u.send(stream, &orbweaverv1.AgentMessage{Msg: &orbweaverv1.AgentMessage_ConfigAck{ConfigAck: ack}}); err != nil {
				return err
			}
		}
	}

	// Everything not acknowledged goes again, in order.
	u.mu.Lock()
	for _, b := range u.unacked {
		if b.sent {
			u.batchesResent.Add(1)
		}
		b.sent = false
	}
	u.mu.Unlock()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if err := u.pump(stream, timer); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			_ = stream.CloseSend()
			return nil
		case r := <-in:
			if r.err != nil {
				return fmt.Errorf("receive: %w", r.err)
			}
			if err := u.handle(stream, r.msg); err != nil {
				return err
			}
		case <-u.wake:
		case <-timer.C:
		}
	}
}

func (u *Uplink) send(stream orbweaverv1.AgentService_ConnectClient, m *orbweaverv1.AgentMessage) error {
	if err := stream.Send(m); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// pump sends what is due: the latest heartbeat, unsent batches, and new
// batches while in-flight room remains; it re-arms timer for the oldest
// queued call's deadline.
func (u *Uplink) pump(stream orbweaverv1.AgentService_ConnectClient, timer *time.Timer) error {
	for {
		u.mu.Lock()
		var out *orbweaverv1.AgentMessage
		var b *batch
		if hb := u.heartbeat; hb != nil {
			u.heartbeat = nil
			out = &orbweaverv1.AgentMessage{Msg: &orbweaverv1.AgentMessage_Heartbeat{Heartbeat: hb}}
		} else if b = u.nextUnsent(); b == nil && len(u.unacked) < u.limits.MaxInFlight && len(u.queue) > 0 {
			due := len(u.queue) >= u.limits.BatchMaxCalls || u.flushNow || time.Since(u.queueSince) >= u.limits.BatchMaxDelay
			if due {
				b = u.cut()
			} else {
				resetTimer(timer, u.limits.BatchMaxDelay-time.Since(u.queueSince))
			}
		}
		if b != nil {
			b.sent = true
			b.sentAt = time.Now()
			out = b.msg
		}
		u.mu.Unlock()
		if out == nil {
			return nil
		}
		if err := u.send(stream, out); err != nil {
			return err
		}
		if b != nil {
			u.bytesUploaded.Add(uint64(b.size))
		}
	}
}

func resetTimer(t *time.Timer, d time.Duration) {
	if d < time.Millisecond {
		d = time.Millisecond
	}
	t.Reset(d)
}

func (u *Uplink) nextUnsent() *batch {
	for _, b := range u.unacked {
		if !b.sent {
			return b
		}
	}
	return nil
}

// cut forms the next batch from the head of the queue (under u.mu).
func (u *Uplink) cut() *batch {
	n := min(len(u.queue), u.limits.BatchMaxCalls)
	calls := make([]*orbweaverv1.HttpCall, n)
	copy(calls, u.queue[:n])
	for _, size := range u.queueSizes[:n] {
		u.queueBytes -= size
	}
	u.queueSizes = u.queueSizes[n:]
	clear(u.queue[:n])
	u.queue = u.queue[n:]
	if len(u.queue) == 0 {
		u.queue = nil
		u.queueSizes = nil
		u.queueBytes = 0
		u.flushNow = false
	} else {
		u.queueSince = time.Now()
	}
	if u.spaceWaiter != nil {
		close(u.spaceWaiter)
		u.spaceWaiter = nil
	}
	u.nextSeq++
	msg := &orbweaverv1.AgentMessage{Msg: &orbweaverv1.AgentMessage_CallBatch{CallBatch: &orbweaverv1.CallBatch{
		AgentId:   u.cfg.AgentID,
		BootId:    u.cfg.BootID,
		Sequence:  u.nextSeq,
		HttpCalls: calls,
	}}}
	b := &batch{seq: u.nextSeq, msg: msg, calls: n, size: proto.Size(msg)}
	u.unacked = append(u.unacked, b)
	return b
}

func (u *Uplink) handle(stream orbweaverv1.AgentService_ConnectClient, m *orbweaverv1.ControllerMessage) error {
	switch msg := m.GetMsg().(type) {
	case *orbweaverv1.ControllerMessage_BatchAck:
		return u.ack(msg.BatchAck)
	case *orbweaverv1.ControllerMessage_Config:
		if ack := u.cfg.Handler.Config(msg.Config); ack != nil {
			return u.send(stream, &orbweaverv1.AgentMessage{Msg: &orbweaverv1.AgentMessage_ConfigAck{ConfigAck: ack}})
		}
	case *orbweaverv1.ControllerMessage_Command:
		u.cfg.Handler.Command(msg.Command)
	case *orbweaverv1.ControllerMessage_Welcome:
		u.log.Warn("unexpected second welcome; ignored")
	}
	return nil
}

func (u *Uplink) ack(a *orbweaverv1.BatchAck) error {
	if a.GetBootId() != u.cfg.BootID {
		return nil // an ack for a previous boot of this agent: nothing to do
	}
	if a.GetError() != "" {
		// Not stored: drop the stream and resend after the backoff.
		return fmt.Errorf("controller could not store batch %d: %s", a.GetSequence(), a.GetError())
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, b := range u.unacked {
		if b.seq != a.GetSequence() {
			continue
		}
		u.unacked = append(u.unacked[:i], u.unacked[i+1:]...)
		u.lastRTT.Store(int64(time.Since(b.sentAt)))
		u.batchesAcked.Add(1)
		if a.GetDuplicate() {
			u.duplicates.Add(1)
		}
		u.callsSent.Add(uint64(b.calls))
		if len(u.queue) == 0 && len(u.unacked) == 0 && u.drainWaiter != nil {
			close(u.drainWaiter)
			u.drainWaiter = nil
		}
		u.poke()
		return nil
	}
	return nil
}
