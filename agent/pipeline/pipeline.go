// Package pipeline wires the agent's decode path for captured frames:
// packet decoding, a flow table of TCP connections, per-direction reassembly
// and the HTTP/1.x parser, producing model.HTTPCall values.
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
	// MaxTotalBufferBytes caps out-of-order bytes buffered across all
	// streams (default 64 MiB).
	MaxTotalBufferBytes int64
	// IdleTimeout expires a connection with no packet for this long, in
	// packet time (default 2 min).
	IdleTimeout time.Duration
	// MaxConnections caps tracked connections (default 200k). Packets that
	// would open a connection beyond it are counted in
	// ConnectionsRejected and ignored.
	MaxConnections int
	// MaxTotalHeaderBytes caps the bytes held across all connections in
	// HTTP header blocks split over several segments (default 64 MiB);
	// beyond it such a message is a parse error. Each header block is
	// also capped at 64 KiB. Captured bodies count against it too.
	MaxTotalHeaderBytes int64
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
		MaxTotalHeaderBytes:  64 << 20,
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
	if c.MaxTotalHeaderBytes <= 0 {
		c.MaxTotalHeaderBytes = d.MaxTotalHeaderBytes
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
	ConnectionsRejected uint64 // packets that would have opened a connection beyond MaxConnections
	ExpiredConnections  uint64 // connections ended by IdleTimeout
	LateSegments        uint64 // segments of connections already closed (late duplicates), ignored
	NonHTTPConnections  uint64 // connections found not to be HTTP
	UpgradedConnections uint64 // connections that switched protocol (101, CONNECT)
	IgnoredBytes        uint64 // TCP payload of non-HTTP and upgraded connections
	Calls               uint64 // calls emitted
	HTTPParseErrors     uint64 // malformed HTTP messages on HTTP connections
	PendingDropped      uint64 // requests dropped: too many awaiting a response
	Retransmissions     uint64 // segments entirely already seen
	RetransmittedBytes  uint64 // bytes seen more than once (retransmissions and overlaps)
	Overlaps            uint64 // segments partly already seen
	OutOfOrder          uint64 // segments buffered ahead of a hole
	Gaps                uint64 // holes skipped
	GapBytes            uint64 // bytes never seen, skipped
	CapDroppedBytes     uint64 // part of GapBytes skipped because a buffer cap was hit
	OutOfWindow         uint64 // segments ignored: more than 1 GiB ahead of the stream
	BufferedBytes       uint64 // gauge: bytes buffered now (out-of-order segments and partial header blocks)
}

// flowKey identifies a connection regardless of direction: endpoint a is the
// lower of the two (address, then port).
type flowKey struct {
	a, b   [16]byte
	pa, pb uint16
}

// sink feeds one direction's ordered bytes to the HTTP parser.
type sink struct {
	c    *conn
	side int
}

func (s *sink) Data(b []byte, ts time.Time) { s.c.http.Data(s.side, b, ts) }
func (s *sink) Gap(n int, ts time.Time)     { s.c.http.Gap(s.side, n, ts) }
func (s *sink) End(ts time.Time)            { s.c.http.End(s.side, ts) }

// Retransmitted implements reassembly.RetransmissionSink.
func (s *sink) Retransmitted(time.Time) { s.c.http.Retransmitted(s.side) }

// conn is one tracked connection; side 0 is the key's endpoint a.
type conn struct {
	key        flowKey
	http       http1.Conn
	streams    [2]reassembly.Stream
	sinks      [2]sink
	lastSeen   time.Time
	prev, next *conn // in active or closed list, least recently seen first
	ignored    bool  // not parsed any more (non-HTTP or upgraded)
	closed     bool  // ended; kept a while to absorb late duplicates
	fin        [2]bool
	hasISN     [2]bool
	isn        [2]uint32 // sequence number of each side's SYN
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
	active connList // connections being parsed
	// ended holds closed connections for IdleTimeout (like TCP's
	// TIME_WAIT) so that late duplicates of their packets, common on the
	// "any" device, do not open phantom connections. They are the first
	// evicted when MaxConnections is reached.
	ended  connList
	budget *reassembly.Budget
	ropts  reassembly.Options
	hopts  http1.Options
	rc     reassembly.Counters
	hc     http1.Counters
	lastTs time.Time
	closed bool

	packets, bytes, decodeErrors, nonTCP, fragments atomic.Uint64
	connections, nActive, rejected, expired         atomic.Uint64
	ignoredBytes, buffered, late, truncated         atomic.Uint64
}

// New returns a pipeline that calls emit once per finished call; emit owns
// the *model.HTTPCall. emit is called from the goroutine calling Packet,
// Tick or Close.
func New(cfg Config, emit func(*model.HTTPCall)) *Pipeline {
	cfg = cfg.withDefaults()
	p := &Pipeline{
		cfg:    cfg,
		emit:   emit,
		conns:  make(map[flowKey]*conn),
		budget: reassembly.NewBudget(cfg.MaxTotalBufferBytes),
	}
	p.ropts = reassembly.Options{MaxBufferBytes: cfg.MaxStreamBufferBytes, Budget: p.budget, Counters: &p.rc}
	p.hopts = http1.DefaultOptions(&p.hc)
	p.hopts.Budget = http1.NewBudget(cfg.MaxTotalHeaderBytes)
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
	p.storeBuffered()
}

// storeBuffered publishes the buffered-bytes gauge.
func (p *Pipeline) storeBuffered() {
	p.buffered.Store(uint64(p.budget.Used() + p.hopts.Budget.Used()))
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
		c = p.newConn(key, seg.IPv6)
	}
	c.lastSeen = ts
	p.active.moveToBack(c)
	if syn && !c.hasISN[side] {
		c.hasISN[side], c.isn[side] = true, seg.Seq
	}
	if c.ignored {
		p.ignoredBytes.Add(uint64(len(seg.Payload)))
		c.fin[side] = c.fin[side] || fin
		if rst || c.fin[0] && c.fin[1] {
			p.end(c, ts)
		}
		return
	}
	st := &c.streams[side]
	if syn && !st.Started() {
		c.http.SYN(side, ack)
	}
	if ack {
		c.streams[1-side].Ack(seg.Ack, ts)
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
		c.streams[side].Reset(ts)
		c.streams[1-side].Reset(ts)
	}
	switch {
	case c.streams[0].Ended() && c.streams[1].Ended():
		p.end(c, ts)
	case c.http.Done():
		p.ignore(c)
	}
}

// newIncarnation reports whether a SYN (without ACK) with sequence number seq
// from side starts a new connection rather than repeating the known one.
func (p *Pipeline) newIncarnation(c *conn, side int, seq uint32) bool {
	if c.hasISN[side] {
		return c.isn[side] != seq
	}
	// Joined mid-stream: a SYN after data is a new connection.
	return c.closed || c.streams[side].Started() && c.streams[side].Next() != seq+1
}

func addrPort(a [16]byte, port uint16, v6 bool) netip.AddrPort {
	if !v6 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{a[12], a[13], a[14], a[15]}), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(a), port)
}

func (p *Pipeline) newConn(key flowKey, v6 bool) *conn {
	c := &conn{key: key}
	c.http.Init(&p.hopts, addrPort(key.a, key.pa, v6), addrPort(key.b, key.pb, v6), p.emit)
	for i := range c.streams {
		c.sinks[i] = sink{c: c, side: i}
		c.streams[i].Init(&p.ropts, &c.sinks[i])
	}
	p.conns[key] = c
	p.connections.Add(1)
	p.nActive.Add(1)
	p.active.pushBack(c)
	return c
}

// ignore stops parsing c: its buffers are released and its payload is only
// counted from now on.
func (p *Pipeline) ignore(c *conn) {
	c.ignored = true
	c.fin[0] = c.streams[0].Ended()
	c.fin[1] = c.streams[1].Ended()
	c.streams[0].Release()
	c.streams[1].Release()
}

// end flushes c (holes skipped, pending requests emitted) and moves it to the
// closed list, where it lingers to absorb late duplicates.
func (p *Pipeline) end(c *conn, ts time.Time) {
	if !c.ignored {
		c.streams[0].Flush(ts)
		c.streams[1].Flush(ts)
	}
	c.streams[0].Release()
	c.streams[1].Release()
	c.http.Close(ts)
	c.http = http1.Conn{}
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
	p.storeBuffered()
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
	p.closed = true
	p.storeBuffered()
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
		LateSegments:        p.late.Load(),
		NonHTTPConnections:  p.hc.NonHTTP.Load(),
		UpgradedConnections: p.hc.Upgraded.Load(),
		IgnoredBytes:        p.ignoredBytes.Load(),
		Calls:               p.hc.Calls.Load(),
		HTTPParseErrors:     p.hc.ParseErrors.Load(),
		PendingDropped:      p.hc.PendingDropped.Load(),
		Retransmissions:     p.rc.Retransmissions.Load(),
		RetransmittedBytes:  p.rc.RetransmittedBytes.Load(),
		Overlaps:            p.rc.Overlaps.Load(),
		OutOfOrder:          p.rc.OutOfOrder.Load(),
		Gaps:                p.rc.Gaps.Load(),
		GapBytes:            p.rc.GapBytes.Load(),
		CapDroppedBytes:     p.rc.CapDroppedBytes.Load(),
		OutOfWindow:         p.rc.OutOfWindow.Load(),
		BufferedBytes:       p.buffered.Load(),
	}
}
