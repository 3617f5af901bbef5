// Package pipeline wires the agent's decode path for captured frames:
// packet decoding, a flow table of TCP connections, per-direction reassembly
// and the HTTP/1.x parser, producing model.HTTPCall values.
//
// Memory: one budget (Config.MaxTotalBufferBytes) is charged everything
// the decode path holds that grows with its input: each tracked connection
// and its slot in the flow table, the parsing state of connections that
// carried payload, out-of-order segments and header and body buffers by
// capacity, and calls waiting for their response. A connection costs little
// until payload arrives (the handshake is remembered and replayed into the
// parser then). When a charge does not fit, room is made by forgetting
// closed connections kept for late duplicates, then by evicting the least
// recently seen connections (never the one being parsed): their buffered
// bytes are discarded and their pending requests emitted, and both are
// counted (Stats.EvictedConnections, EvictedBytes). Only when nothing else
// can be evicted is the charge refused, and the part that asked degrades as
// at its own cap: a hole is skipped as a gap, a header block is dropped as
// too large, body bytes are not kept, a connection is not tracked.
//
// Packet, Tick and Close must be called from one goroutine. Stats may be
// called from any goroutine at any time.
package pipeline

import (
	"bytes"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket/layers"

	"github.com/orbweaver/orbweaver/agent/decode/http1"
	"github.com/orbweaver/orbweaver/agent/decode/httpfields"
	"github.com/orbweaver/orbweaver/agent/packet"
	"github.com/orbweaver/orbweaver/agent/reassembly"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/model"
)

// Config bounds the pipeline's memory and state. A zero field takes its
// default (see DefaultConfig).
type Config struct {
	// MaxStreamBufferBytes caps out-of-order bytes buffered per direction
	// (default 256 KiB). When reached, the oldest hole is skipped as a gap.
	MaxStreamBufferBytes int
	// MaxTotalBufferBytes is the decode path's memory budget (default
	// 64 MiB): connection state, out-of-order segments, header and body
	// buffers and pending calls together (see the package documentation).
	MaxTotalBufferBytes int64
	// IdleTimeout expires a connection with no packet for this long, in
	// packet time (default 2 min).
	IdleTimeout time.Duration
	// MaxConnections caps tracked connections (default 200k). Packets that
	// would open a connection beyond it are counted in
	// ConnectionsRejected and ignored.
	MaxConnections int
	// Parsing selects the derived fields, stored headers and body capture
	// of calls (see ParsingFromProto). The zero value stores the default
	// header set, captures no body and salts redaction hashes randomly.
	Parsing ParsingOptions
}

// ParsingOptions configure what calls carry beyond the wire fields; see
// httpfields.Config.
type ParsingOptions = httpfields.Config

// TemplateRule is a path template rule of ParsingOptions.
type TemplateRule = httpfields.TemplateRule

// Validate reports an invalid parsing option (a template rule that does not
// compile), naming the field. New ignores invalid rules.
func (c Config) Validate() error {
	for i, r := range c.Parsing.TemplateRules {
		if _, err := regexp.Compile(r.Pattern); err != nil {
			return fmt.Errorf("parsing.template_rules[%d].pattern: %w", i, err)
		}
	}
	return nil
}

// ParsingFromProto converts the parsing part of an agent's configuration.
// Zero values take the defaults (headers_keep empty: the default header
// set; body_max_bytes 0: 64 KiB). It fails on a template rule that does not
// compile, naming the field. The redaction salt is not part of the
// configuration: set Salt on the result (for example from a per-agent
// secret) to match hashes across restarts.
func ParsingFromProto(p *orbweaverv1.ParsingConfig) (ParsingOptions, error) {
	o := ParsingOptions{
		AllHeaders:    p.GetAllHeaders(),
		CaptureBodies: p.GetCaptureBodies(),
		BodyMaxBytes:  int(min(p.GetBodyMaxBytes(), math.MaxInt32)),
	}
	if len(p.GetHeadersKeep()) > 0 {
		o.HeadersKeep = append([]string(nil), p.GetHeadersKeep()...)
	}
	o.HeadersRedact = append([]string(nil), p.GetHeadersRedact()...)
	for i, r := range p.GetTemplateRules() {
		if _, err := regexp.Compile(r.GetPattern()); err != nil {
			return ParsingOptions{}, fmt.Errorf("parsing.template_rules[%d].pattern: %w", i, err)
		}
		o.TemplateRules = append(o.TemplateRules, TemplateRule{Pattern: r.GetPattern(), Template: r.GetTemplate()})
	}
	return o, nil
}

// DefaultConfig returns the default configuration.
func DefaultConfig() Config {
	return Config{
		MaxStreamBufferBytes: 256 << 10,
		MaxTotalBufferBytes:  64 << 20,
		IdleTimeout:          2 * time.Minute,
		MaxConnections:       200_000,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxStreamBufferBytes <= 0 {
		c.MaxStreamBufferBytes = d.MaxStreamBufferBytes
	}
	if c.MaxTotalBufferBytes <= 0 {
		c.MaxTotalBufferBytes = d.MaxTotalBufferBytes
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = d.MaxConnections
	}
	return c
}

// Stats are cumulative counters (and a few gauges) of a pipeline.
type Stats struct {
	Packets             uint64 // frames passed to Packet
	Bytes               uint64 // their captured length
	DecodeErrors        uint64 // malformed or truncated frames, unsupported link types
	NonTCP              uint64 // well-formed frames that are not TCP (fragments included)
	Fragments           uint64 // IP fragments (ignored; also in NonTCP)
	SnapTruncated       uint64 // TCP segments cut by the capture's snap length (the cut bytes become a gap)
	Connections         uint64 // connections tracked since start
	ActiveConnections   uint64 // gauge: connections tracked now
	ConnectionsRejected uint64 // packets that would have opened a connection beyond MaxConnections (or the memory budget)
	ExpiredConnections  uint64 // connections ended by IdleTimeout
	EvictedConnections  uint64 // connections forgotten to stay within the memory budget, least recently seen first
	EvictedBytes        uint64 // captured bytes those connections held undelivered (out-of-order, partial headers, body captures)
	LateSegments        uint64 // segments of connections already closed (late duplicates), ignored
	NonHTTPConnections  uint64 // connections found not to be HTTP
	UpgradedConnections uint64 // connections that switched protocol (101, CONNECT)
	IgnoredBytes        uint64 // TCP payload of non-HTTP and upgraded connections
	Calls               uint64 // calls emitted
	HTTPParseErrors     uint64 // malformed HTTP messages on HTTP connections
	PendingDropped      uint64 // requests dropped: too many awaiting a response
	HTTPMemoryRefused   uint64 // header blocks, lines and body captures the memory budget could not hold
	Retransmissions     uint64 // segments entirely already seen
	RetransmittedBytes  uint64 // bytes seen more than once (retransmissions and overlaps)
	Overlaps            uint64 // segments partly already seen
	OutOfOrder          uint64 // segments buffered ahead of a hole
	Gaps                uint64 // holes skipped
	GapBytes            uint64 // bytes never seen, skipped
	CapDroppedBytes     uint64 // part of GapBytes skipped because a buffer cap was hit
	OutOfWindow         uint64 // segments ignored: more than 1 GiB ahead of the stream
	BufferedBytes       uint64 // gauge: part of MemoryBytes in out-of-order segments, header and body buffers and pending calls
	MemoryBytes         uint64 // gauge: bytes charged to the memory budget now
	MemoryBudgetBytes   uint64 // the memory budget (MaxTotalBufferBytes)
}

// flowKey identifies a connection regardless of direction: endpoint a is the
// lower of the two (address, then port).
type flowKey struct {
	a, b   [16]byte
	pa, pb uint16
}

// sink feeds one direction's ordered bytes to the HTTP parser.
type sink struct {
	f    *flow
	side int
}

func (s *sink) Data(b []byte, ts time.Time) { s.f.http.Data(s.side, b, ts) }
func (s *sink) Gap(n int, ts time.Time)     { s.f.http.Gap(s.side, n, ts) }
func (s *sink) End(ts time.Time)            { s.f.http.End(s.side, ts) }

// Retransmitted implements reassembly.RetransmissionSink.
func (s *sink) Retransmitted(time.Time) { s.f.http.Retransmitted(s.side) }

// conn is one tracked connection; side 0 is the key's endpoint a. Until a
// segment carries payload only this is allocated: the handshake is
// remembered here and replayed into the flow when it is created.
type conn struct {
	key      flowKey
	v6       bool
	ignored  bool // not parsed any more (non-HTTP or upgraded)
	closed   bool // ended; kept a while to absorb late duplicates
	fin      [2]bool
	hasISN   [2]bool
	synAck   [2]bool   // before the flow: the side's first SYN carried an ACK
	hasAck   [2]bool   // before the flow: an ACK was seen for the side's stream
	firstSyn int8      // before the flow: the side whose SYN came first, or -1
	isn      [2]uint32 // sequence number of each side's SYN
	maxAck   [2]uint32 // before the flow: highest ACK of each side's stream
	lastSeen time.Time
	prev     *conn // in active or closed list, least recently seen first
	next     *conn
	flow     *flow // parsing state; nil until payload, and once ignored or closed
}

// flow is the parsing state of a connection that carried payload.
type flow struct {
	http    http1.Conn
	streams [2]reassembly.Stream
	sinks   [2]sink
}

// Fixed charges to the memory budget.
var (
	// connCost is a tracked connection.
	connCost = objectSize(unsafe.Sizeof(conn{}))
	// flowCost is a connection's parsing state, with the small slice of
	// pending calls its parser keeps (the calls are charged by http1).
	flowCost = objectSize(unsafe.Sizeof(flow{})) + 4*int64(unsafe.Sizeof(uintptr(0)))
)

// mapSlotCost is charged per entry of the flow table at its high-water
// mark (Go maps do not shrink; Tick rebuilds the table when it is mostly
// empty): an upper bound of a map entry's memory measured for this key
// and value (74–120 bytes, the most right after the table doubles).
const mapSlotCost = 128

// objectSize returns the memory of an allocation of an object of n bytes
// with pointers: n plus the allocator's header for objects over 512 bytes,
// rounded up to the allocator's size class as append does.
func objectSize(n uintptr) int64 {
	if n > 512 {
		n += 8
	}
	return int64(cap(append([]byte(nil), make([]byte, n)...)))
}

// budget is the decode path's memory budget. When a charge does not fit, it
// asks the pipeline to make room.
type budget struct {
	max, used int64
	p         *Pipeline
}

func (b *budget) reserve(n int64) bool {
	if b.used+n > b.max && !b.p.makeRoom(n) {
		return false
	}
	b.used += n
	return true
}

func (b *budget) release(n int64) { b.used -= n }

// account is the part of the budget charged by one package (reassembly or
// http1); it implements their Budget interfaces.
type account struct {
	b    *budget
	used int64
}

func (a *account) Reserve(n int64) bool {
	if !a.b.reserve(n) {
		return false
	}
	a.used += n
	return true
}

func (a *account) Release(n int64) {
	a.used -= n
	a.b.release(n)
}

// connList is an intrusive doubly linked list of connections.
type connList struct{ head, tail *conn }

func (l *connList) pushBack(c *conn) {
	c.prev, c.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = c
	} else {
		l.head = c
	}
	l.tail = c
}

func (l *connList) remove(c *conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		l.tail = c.prev
	}
	c.prev, c.next = nil, nil
}

func (l *connList) moveToBack(c *conn) {
	if l.tail == c {
		return
	}
	l.remove(c)
	l.pushBack(c)
}

// Pipeline decodes frames into HTTP calls. Create it with New.
type Pipeline struct {
	cfg    Config
	emit   func(*model.HTTPCall)
	conns  map[flowKey]*conn
	mapHWM int      // entries the flow table has been charged for
	active connList // connections being parsed
	// ended holds closed connections for IdleTimeout (like TCP's
	// TIME_WAIT) so that late duplicates of their packets, common on the
	// "any" device, do not open phantom connections. They are the first
	// evicted when MaxConnections or the memory budget is reached.
	ended      connList
	mem        budget
	oooMem     account // reassembly's part of mem
	httpMem    account // http1's part of mem
	cur        *conn   // connection being worked on: never evicted
	reclaiming bool    // evicting: charges made meanwhile do not evict more
	ropts      reassembly.Options
	hopts      http1.Options
	rc         reassembly.Counters
	hc         http1.Counters
	lastTs     time.Time
	closed     bool
	shownMem   int64 // last values stored in the gauges
	shownBuf   int64
	eagerFlows bool // tests: create flows with connections, the behaviour lazy flows reproduce

	packets, bytes, decodeErrors, nonTCP, fragments atomic.Uint64
	connections, nActive, rejected, expired         atomic.Uint64
	evicted, evictedBytes                           atomic.Uint64
	ignoredBytes, buffered, memory, late, truncated atomic.Uint64
}

// New returns a pipeline that calls emit once per finished call; emit owns
// the *model.HTTPCall. emit is called from the goroutine calling Packet,
// Tick or Close.
func New(cfg Config, emit func(*model.HTTPCall)) *Pipeline {
	cfg = cfg.withDefaults()
	p := &Pipeline{
		cfg:   cfg,
		emit:  emit,
		conns: make(map[flowKey]*conn),
	}
	p.mem = budget{max: cfg.MaxTotalBufferBytes, p: p}
	p.oooMem = account{b: &p.mem}
	p.httpMem = account{b: &p.mem}
	p.ropts = reassembly.Options{MaxBufferBytes: cfg.MaxStreamBufferBytes, Budget: &p.oooMem, Counters: &p.rc}
	p.hopts = http1.DefaultOptions(&p.hc)
	p.hopts.Budget = &p.httpMem
	p.hopts.Fields = newFields(cfg.Parsing)
	return p
}

// newFields builds the field extractor; invalid template rules (reported by
// Config.Validate) are dropped one by one.
func newFields(o ParsingOptions) *httpfields.Extractor {
	var rules []httpfields.TemplateRule
	for _, r := range o.TemplateRules {
		if _, err := regexp.Compile(r.Pattern); err == nil {
			rules = append(rules, r)
		}
	}
	o.TemplateRules = rules
	x, err := httpfields.New(o)
	if err != nil {
		// Only the random salt can fail now (no entropy): use a fixed one
		// rather than lose the calls.
		o.Salt = []byte("orbweaver: no random salt")
		x, _ = httpfields.New(o)
	}
	return x
}

// Packet decodes one captured frame. data is only valid during the call.
func (p *Pipeline) Packet(linkType layers.LinkType, data []byte, ts time.Time) {
	p.packets.Add(1)
	p.bytes.Add(uint64(len(data)))
	if p.closed {
		return
	}
	var seg packet.Segment
	switch packet.Decode(linkType, data, &seg) {
	case packet.TCP:
	case packet.NotTCP:
		p.nonTCP.Add(1)
		return
	case packet.Fragment:
		p.nonTCP.Add(1)
		p.fragments.Add(1)
		return
	default:
		p.decodeErrors.Add(1)
		return
	}
	if ts.After(p.lastTs) {
		p.lastTs = ts
	}
	p.segment(&seg, ts)
	p.storeGauges()
}

// storeGauges publishes the memory gauges when they changed.
func (p *Pipeline) storeGauges() {
	if m := p.mem.used; m != p.shownMem {
		p.shownMem = m
		p.memory.Store(uint64(m))
	}
	if b := p.oooMem.used + p.httpMem.used; b != p.shownBuf {
		p.shownBuf = b
		p.buffered.Store(uint64(b))
	}
}

func (p *Pipeline) segment(seg *packet.Segment, ts time.Time) {
	var key flowKey
	side := 0
	if c := bytes.Compare(seg.Src[:], seg.Dst[:]); c < 0 || c == 0 && seg.SrcPort <= seg.DstPort {
		key = flowKey{a: seg.Src, b: seg.Dst, pa: seg.SrcPort, pb: seg.DstPort}
	} else {
		key = flowKey{a: seg.Dst, b: seg.Src, pa: seg.DstPort, pb: seg.SrcPort}
		side = 1
	}
	syn, ack := seg.Flags.Has(packet.SYN), seg.Flags.Has(packet.ACK)
	fin, rst := seg.Flags.Has(packet.FIN), seg.Flags.Has(packet.RST)
	c := p.conns[key]
	if c != nil && syn && !ack && p.newIncarnation(c, side, seg.Seq) {
		// A new connection on the same ports: end the old one.
		if !c.closed {
			p.end(c, ts)
		}
		p.drop(c)
		c = nil
	}
	if c != nil && c.closed {
		p.late.Add(1)
		return
	}
	if c == nil {
		if rst || !syn && len(seg.Payload) == 0 {
			return
		}
		if len(p.conns) >= p.cfg.MaxConnections && p.ended.head != nil {
			p.drop(p.ended.head)
		}
		if len(p.conns) >= p.cfg.MaxConnections {
			p.rejected.Add(1)
			return
		}
		if c = p.newConn(key, seg.IPv6); c == nil {
			p.rejected.Add(1)
			return
		}
	}
	// Charges made from here on may evict other connections, never c.
	// (p.cur stays set after the packet: it only protects that
	// connection until the next one.)
	p.cur = c
	c.lastSeen = ts
	p.active.moveToBack(c)
	if syn && !c.hasISN[side] {
		c.hasISN[side], c.isn[side] = true, seg.Seq
		if c.flow == nil && !c.ignored {
			c.noteSYN(side, ack)
		}
	}
	if c.ignored {
		p.ignoredBytes.Add(uint64(len(seg.Payload)))
		c.fin[side] = c.fin[side] || fin
		if rst || c.fin[0] && c.fin[1] {
			p.end(c, ts)
		}
		return
	}
	f := c.flow
	if f == nil {
		if len(seg.Payload) == 0 && !fin && !rst && seg.Truncated == 0 {
			// Handshake or pure ACK: nothing to parse yet.
			if ack {
				c.noteACK(1-side, seg.Ack)
			}
			return
		}
		if f = p.newFlow(c, ts); f == nil {
			p.evict(c)
			return
		}
	}
	st := &f.streams[side]
	if syn && !st.Started() {
		f.http.SYN(side, ack)
	}
	if ack {
		f.streams[1-side].Ack(seg.Ack, ts)
	}
	if seg.Truncated == 0 {
		st.Segment(seg.Seq, syn, fin, seg.Payload, ts)
	} else {
		// Cut by the snap length: the bytes after the captured part are
		// a gap, and a FIN comes after them.
		st.Segment(seg.Seq, syn, false, seg.Payload, ts)
		end := seg.Seq + uint32(len(seg.Payload))
		if syn {
			end++
		}
		p.truncated.Add(1)
		st.Missing(end, seg.Truncated, ts)
		if fin {
			st.Segment(end+uint32(seg.Truncated), false, true, nil, ts)
		}
	}
	if rst {
		f.streams[side].Reset(ts)
		f.streams[1-side].Reset(ts)
	}
	switch {
	case f.streams[0].Ended() && f.streams[1].Ended():
		p.end(c, ts)
	case f.http.Done():
		p.ignore(c, ts)
	}
}

// noteSYN remembers, before c has a flow, that side's stream starts with
// a SYN (ack: a SYN-ACK), for newFlow to replay.
func (c *conn) noteSYN(side int, ack bool) {
	c.synAck[side] = ack
	if c.firstSyn < 0 {
		c.firstSyn = int8(side)
	}
}

// ackedUnseen reports whether, before c has a flow, the peer of a side
// acknowledged bytes of it that were never seen (lost by the capture).
func (c *conn) ackedUnseen() bool {
	for s := range 2 {
		if c.hasAck[s] && seqDiff(c.maxAck[s], c.isn[s]+1) > 0 {
			return true
		}
	}
	return false
}

// noteACK remembers, before c has a flow, an ACK for side's stream, as the
// stream would record it (only once started, the highest in sequence space).
func (c *conn) noteACK(side int, ack uint32) {
	if c.hasISN[side] && (!c.hasAck[side] || seqDiff(ack, c.maxAck[side]) > 0) {
		c.hasAck[side], c.maxAck[side] = true, ack
	}
}

// seqDiff returns a-b in sequence space.
func seqDiff(a, b uint32) int64 { return int64(int32(a - b)) }

// newIncarnation reports whether a SYN (without ACK) with sequence number seq
// from side starts a new connection rather than repeating the known one.
func (p *Pipeline) newIncarnation(c *conn, side int, seq uint32) bool {
	if c.hasISN[side] {
		return c.isn[side] != seq
	}
	if c.closed {
		return true
	}
	// Joined mid-stream: a SYN after data is a new connection.
	f := c.flow
	return f != nil && f.streams[side].Started() && f.streams[side].Next() != seq+1
}

func addrPort(a [16]byte, port uint16, v6 bool) netip.AddrPort {
	if !v6 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{a[12], a[13], a[14], a[15]}), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(a), port)
}

// newConn starts tracking a connection, or returns nil when the memory
// budget has no room for it.
func (p *Pipeline) newConn(key flowKey, v6 bool) *conn {
	// Charge a table slot too in case the table grows; making room may
	// evict connections, and then it does not.
	if !p.mem.reserve(connCost + mapSlotCost) {
		return nil
	}
	if len(p.conns) >= p.mapHWM {
		p.mapHWM++
	} else {
		p.mem.release(mapSlotCost)
	}
	c := &conn{key: key, v6: v6, firstSyn: -1}
	p.conns[key] = c
	p.connections.Add(1)
	p.nActive.Add(1)
	p.active.pushBack(c)
	if p.eagerFlows && p.newFlow(c, time.Time{}) == nil {
		p.evict(c)
		return nil
	}
	return c
}

// newFlow creates c's parsing state and replays its handshake into it. It
// returns nil when the memory budget has no room.
func (p *Pipeline) newFlow(c *conn, ts time.Time) *flow {
	if !p.mem.reserve(flowCost) {
		return nil
	}
	f := &flow{}
	f.http.Init(&p.hopts, addrPort(c.key.a, c.key.pa, c.v6), addrPort(c.key.b, c.key.pb, c.v6), p.emit)
	for i := range f.streams {
		f.sinks[i] = sink{f: f, side: i}
		f.streams[i].Init(&p.ropts, &f.sinks[i])
	}
	c.flow = f
	if c.firstSyn >= 0 {
		// Nothing is delivered: the streams only start and record ACKs.
		for _, s := range [2]int{int(c.firstSyn), 1 - int(c.firstSyn)} {
			if !c.hasISN[s] {
				continue
			}
			f.http.SYN(s, c.synAck[s])
			f.streams[s].Segment(c.isn[s], true, false, nil, ts)
			if c.hasAck[s] {
				f.streams[s].Ack(c.maxAck[s], ts)
			}
		}
	}
	return f
}

// freeFlow releases c's parsing state: buffered bytes are dropped and the
// parser is closed (pending requests are emitted).
func (p *Pipeline) freeFlow(c *conn, ts time.Time) {
	f := c.flow
	f.streams[0].Release()
	f.streams[1].Release()
	f.http.Close(ts)
	c.flow = nil
	p.mem.release(flowCost)
}

// ignore stops parsing c: its parsing state is released (pending requests
// are emitted) and its payload is only counted from now on.
func (p *Pipeline) ignore(c *conn, ts time.Time) {
	f := c.flow
	c.ignored = true
	c.fin[0] = f.streams[0].Ended()
	c.fin[1] = f.streams[1].Ended()
	p.freeFlow(c, ts)
}

// end flushes c (holes skipped, pending requests emitted) and moves it to the
// closed list, where it lingers to absorb late duplicates.
func (p *Pipeline) end(c *conn, ts time.Time) {
	prev := p.cur
	p.cur = c // flushing may charge the budget: never evict c meanwhile
	if c.flow == nil && !c.ignored && c.ackedUnseen() {
		// The flush reports the acknowledged bytes as lost, as a flow
		// created with the connection would.
		p.newFlow(c, ts)
	}
	if c.flow != nil {
		if !c.ignored {
			c.flow.streams[0].Flush(ts)
			c.flow.streams[1].Flush(ts)
		}
		p.freeFlow(c, ts)
	}
	p.cur = prev
	c.ignored, c.closed = true, true
	c.lastSeen = ts
	p.active.remove(c)
	p.ended.pushBack(c)
	p.nActive.Add(^uint64(0))
}

// drop forgets a closed connection.
func (p *Pipeline) drop(c *conn) {
	p.ended.remove(c)
	delete(p.conns, c.key)
	p.mem.release(connCost)
}

// evict forgets an active connection to free memory: its buffered bytes
// are discarded (counted) and its parser closed.
func (p *Pipeline) evict(c *conn) {
	p.evicted.Add(1)
	p.active.remove(c)
	delete(p.conns, c.key)
	p.nActive.Add(^uint64(0))
	if f := c.flow; f != nil {
		held := f.streams[0].Buffered() + f.streams[1].Buffered() + f.http.Buffered()
		p.evictedBytes.Add(uint64(held))
		reclaiming := p.reclaiming
		p.reclaiming = true // closing the parser may charge: evict no more
		p.freeFlow(c, p.lastTs)
		p.reclaiming = reclaiming
	}
	p.mem.release(connCost)
}

// makeRoom frees memory until n more bytes fit in the budget: closed
// connections first, then the least recently seen active ones, never the
// connection being worked on. It reports whether n fits.
func (p *Pipeline) makeRoom(n int64) bool {
	if p.reclaiming {
		return false
	}
	for p.mem.used+n > p.mem.max {
		if c := p.ended.head; c != nil && c != p.cur {
			p.drop(c)
			continue
		}
		c := p.active.head
		if c != nil && c == p.cur {
			c = c.next
		}
		if c == nil {
			return false
		}
		p.evict(c)
	}
	return true
}

// Tick expires connections idle for longer than IdleTimeout at now (packet
// time), and forgets closed connections after their linger time.
func (p *Pipeline) Tick(now time.Time) {
	for c := p.active.head; c != nil && now.Sub(c.lastSeen) > p.cfg.IdleTimeout; c = p.active.head {
		p.expired.Add(1)
		p.end(c, now)
	}
	for c := p.ended.head; c != nil && now.Sub(c.lastSeen) > p.cfg.IdleTimeout; c = p.ended.head {
		p.drop(c)
	}
	if p.mapHWM > 1024 && len(p.conns) < p.mapHWM/4 {
		p.rebuildMap()
	}
	p.storeGauges()
}

// rebuildMap copies the flow table into one sized for its entries (Go maps
// never shrink) and returns the charge of the slots no longer held.
func (p *Pipeline) rebuildMap() {
	m := make(map[flowKey]*conn, len(p.conns))
	for k, c := range p.conns {
		m[k] = c
	}
	p.conns = m
	p.mem.release(int64(p.mapHWM-len(m)) * mapSlotCost)
	p.mapHWM = len(m)
}

// Close flushes every connection at the end of input: holes are skipped,
// close-delimited bodies end, requests without a response are emitted as
// no_response. Packet calls after Close are counted and ignored.
func (p *Pipeline) Close() {
	for p.active.head != nil {
		p.end(p.active.head, p.lastTs)
	}
	for p.ended.head != nil {
		p.drop(p.ended.head)
	}
	p.rebuildMap()
	p.closed = true
	p.storeGauges()
}

// Stats returns the current counters. Safe for concurrent use.
func (p *Pipeline) Stats() Stats {
	return Stats{
		Packets:             p.packets.Load(),
		Bytes:               p.bytes.Load(),
		DecodeErrors:        p.decodeErrors.Load(),
		NonTCP:              p.nonTCP.Load(),
		Fragments:           p.fragments.Load(),
		SnapTruncated:       p.truncated.Load(),
		Connections:         p.connections.Load(),
		ActiveConnections:   p.nActive.Load(),
		ConnectionsRejected: p.rejected.Load(),
		ExpiredConnections:  p.expired.Load(),
		EvictedConnections:  p.evicted.Load(),
		EvictedBytes:        p.evictedBytes.Load(),
		LateSegments:        p.late.Load(),
		NonHTTPConnections:  p.hc.NonHTTP.Load(),
		UpgradedConnections: p.hc.Upgraded.Load(),
		IgnoredBytes:        p.ignoredBytes.Load(),
		Calls:               p.hc.Calls.Load(),
		HTTPParseErrors:     p.hc.ParseErrors.Load(),
		PendingDropped:      p.hc.PendingDropped.Load(),
		HTTPMemoryRefused:   p.hc.MemoryRefused.Load(),
		Retransmissions:     p.rc.Retransmissions.Load(),
		RetransmittedBytes:  p.rc.RetransmittedBytes.Load(),
		Overlaps:            p.rc.Overlaps.Load(),
		OutOfOrder:          p.rc.OutOfOrder.Load(),
		Gaps:                p.rc.Gaps.Load(),
		GapBytes:            p.rc.GapBytes.Load(),
		CapDroppedBytes:     p.rc.CapDroppedBytes.Load(),
		OutOfWindow:         p.rc.OutOfWindow.Load(),
		BufferedBytes:       p.buffered.Load(),
		MemoryBytes:         p.memory.Load(),
		MemoryBudgetBytes:   uint64(p.cfg.MaxTotalBufferBytes),
	}
}
