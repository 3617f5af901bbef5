// Package http1 turns the two reassembled byte streams of a TCP connection
// into HTTP/1.x calls (model.HTTPCall).
//
// A Conn is fed by reassembly: Data, Gap and End per side, Close at the end.
// It recognises HTTP by content on any port, decides which side is the client
// (from the SYN when the caller saw it, else from who sends a request line),
// parses request and status lines and headers (a header block is capped),
// frames bodies (Content-Length, chunked with trailers, close-delimited,
// bodiless responses to HEAD and 1xx/204/304), skips interim 1xx responses,
// stops at 101 Switching Protocols, matches pipelined responses to requests
// in FIFO order and resynchronises on the next start line after a gap or a
// parse error. Body bytes are counted, never copied; header blocks are
// parsed in place when a segment holds them whole.
//
// Body sizes: for Content-Length and close-delimited bodies, the bytes on the
// wire; for chunked bodies, the decoded payload size (sum of chunk sizes,
// without chunk framing and trailers). Header sizes include the start line
// and the final blank line. For a response preceded by interim 1xx
// responses, ResponseStart and ResponseHeaderSize are those of the final
// response.
//
// Memory: every byte a Conn holds beyond its own struct is charged to
// Options.Budget — line and header buffers and captured body bytes by
// capacity, each call waiting to be emitted by its fixed size plus the size
// of the header blocks its strings came from (and its captured body text) —
// and released when freed or emitted. A charge the Budget refuses is handled
// like the cap it resembles: a header block is treated as over
// MaxHeaderBytes, body bytes or text are not kept (the body is marked
// truncated).
//
// With Options.Fields set, every call also gets the derived fields of
// package httpfields (identification, JWT claims, credentials, origin,
// template, redacted header sets, content codings) and, when body capture is
// configured, its bodies: up to the configured size of raw bytes are copied
// (within the Budget) and decoded when the message ends.
//
// A Conn is not safe for concurrent use; Counters may be read from any
// goroutine.
package http1

import (
	"bytes"
	"net/netip"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/orbweaver/orbweaver/agent/decode/httpfields"
	"github.com/orbweaver/orbweaver/internal/model"

	"github.com/orbweaver/orbweaver/agent/membudget"
)

// Counters count parser events across connections.
type Counters struct {
	// Calls counts calls emitted.
	Calls atomic.Uint64
	// ParseErrors counts malformed messages on connections known to be
	// HTTP (bad start line or header, header block over the cap, bad
	// chunk framing).
	ParseErrors atomic.Uint64
	// NonHTTP counts connections found not to be HTTP.
	NonHTTP atomic.Uint64
	// Upgraded counts connections that left HTTP (101 or CONNECT).
	Upgraded atomic.Uint64
	// PendingDropped counts requests dropped because too many were
	// waiting for a response on one connection.
	PendingDropped atomic.Uint64
	// MemoryRefused counts header blocks, lines and body bytes refused by
	// the Budget (header blocks are also counted in ParseErrors when the
	// connection is known to be HTTP).
	MemoryRefused atomic.Uint64
}

// Options configure Conns. They are shared and must not change while used.
type Options struct {
	// MaxHeaderBytes caps a header block (and trailers); beyond it the
	// message is a parse error. Default 64 KiB.
	MaxHeaderBytes int
	// MaxResyncScan is how many bytes a side joined mid-stream may scan
	// for a start line before the connection, if no HTTP was seen on it
	// yet, is declared not HTTP. Default 256 KiB.
	MaxResyncScan int
	// MaxPending caps requests waiting for their response. Default 128.
	MaxPending int
	// Budget is charged the memory that Conns hold beyond their structs
	// (see the package documentation). Required; DefaultOptions sets one
	// without a limit.
	Budget Budget
	// Counters receives counts. Required.
	Counters *Counters
	// Fields, when set, derives the httpfields of every call and captures
	// bodies as it is configured. Conns sharing it must be used from one
	// goroutine.
	Fields *httpfields.Extractor
}

// Budget accounts the memory held by Conns, shared with whatever else the
// caller charges to it.
type Budget = membudget.Budget

// exchangeCost is what a call waiting to be emitted is charged besides the
// header blocks its strings came from: its allocation and its slot in the
// pending queue (whose slice grows by doubling).
var exchangeCost = objectSize(unsafe.Sizeof(exchange{})) + 2*int64(unsafe.Sizeof((*exchange)(nil)))

// objectSize returns the memory of an allocation of an object of n bytes
// with pointers: n plus the allocator's header (for objects over 512
// bytes), rounded up to the allocator's size class as append does.
func objectSize(n uintptr) int64 {
	if n > 512 {
		n += 8
	}
	return int64(cap(append([]byte(nil), make([]byte, n)...)))
}

// DefaultOptions returns options with the defaults and the given counters.
func DefaultOptions(c *Counters) Options {
	return Options{MaxHeaderBytes: 64 << 10, MaxResyncScan: 256 << 10, MaxPending: 128, Budget: membudget.Unlimited, Counters: c}
}

const maxChunkLine = 4 << 10

type state uint8

const (
	stStart     state = iota // in sync, expecting a message
	stHeaders                // accumulating a header block
	stBody                   // Content-Length body
	stChunkSize              // reading a chunk-size line
	stChunkData              // inside a chunk
	stChunkCRLF              // CRLF after chunk data
	stTrailers               // trailer lines after the last chunk
	stCloseBody              // body delimited by the end of the stream
	stResync                 // looking for a start line
	stIgnore                 // nothing more is parsed on this side
)

// exchange is one request/response pair; the call is emitted by pointer so
// one allocation holds both.
type exchange struct {
	call                 model.HTTPCall
	charged              int64 // charged to the Budget until emitted
	reqDone, respDone    bool
	noRequest            bool
	head, connect        bool
	gap, truncated, upgr bool
}

// side is the parser state of one direction.
type side struct {
	kind      kind // what this side sends; kindNone until known
	st        state
	synSeen   bool // stream start seen: its first bytes decide HTTP or not
	msgs      int  // messages started on this side
	tentative bool // stHeaders entered from stResync
	gapNext   bool // mark the next message of this side as gap
	buf       []byte
	msgTs     time.Time
	lastTs    time.Time
	remaining int64
	body      int64
	trailers  int
	scanned   int
	ex        *exchange
	retrans   int64  // retransmitted segments of this side
	retransAt int64  // retrans when the previous message ended
	capBody   bool   // capturing the current message's body
	rawCut    bool   // body bytes were not all kept
	raw       []byte // captured body bytes (within the Budget)
}

type connState uint8

const (
	connActive connState = iota
	connNonHTTP
	connUpgraded
)

// Conn parses one TCP connection. Sides are 0 and 1, in the caller's terms.
type Conn struct {
	opts     *Options
	emit     func(*model.HTTPCall)
	addr     [2]netip.AddrPort
	client   int // -1 unknown
	sides    [2]side
	pending  []*exchange
	state    connState
	everHTTP bool
	charged  int64 // charged to the Budget now
}

// NewConn returns a parser for a connection between addr0 (side 0) and addr1
// (side 1). emit is called once per finished call and owns it.
func NewConn(opts *Options, addr0, addr1 netip.AddrPort, emit func(*model.HTTPCall)) *Conn {
	c := &Conn{}
	c.Init(opts, addr0, addr1, emit)
	return c
}

// Init resets c for a new connection, as NewConn.
func (c *Conn) Init(opts *Options, addr0, addr1 netip.AddrPort, emit func(*model.HTTPCall)) {
	*c = Conn{opts: opts, emit: emit, addr: [2]netip.AddrPort{addr0, addr1}, client: -1}
}

// SYN tells that side s sent a SYN (ack: a SYN-ACK) before any data, so its
// stream start is known and it tells the client.
func (c *Conn) SYN(s int, ack bool) {
	c.sides[s&1].synSeen = true
	if c.client < 0 {
		if ack {
			c.setClient(1 - s&1)
		} else {
			c.setClient(s & 1)
		}
	}
}

// Client returns the client side, or -1 when not yet known.
func (c *Conn) Client() int { return c.client }

// Done reports whether the connection is no longer parsed (not HTTP, or
// upgraded to another protocol). Further input is ignored.
func (c *Conn) Done() bool { return c.state != connActive }

// NonHTTP reports whether the connection was found not to be HTTP.
func (c *Conn) NonHTTP() bool { return c.state == connNonHTTP }

// Memory returns the bytes c has charged to the Budget and not released:
// its buffers by capacity and the calls it holds. It is 0 after Close.
func (c *Conn) Memory() int64 { return c.charged }

// Buffered returns the captured bytes c holds undelivered: partial lines
// and header blocks, and body bytes being captured.
func (c *Conn) Buffered() int {
	return len(c.sides[0].buf) + len(c.sides[0].raw) + len(c.sides[1].buf) + len(c.sides[1].raw)
}

// reserve charges n bytes to the budget.
func (c *Conn) reserve(n int64) bool {
	if !c.opts.Budget.Reserve(n) {
		return false
	}
	c.charged += n
	return true
}

// release returns n bytes to the budget.
func (c *Conn) release(n int64) {
	c.charged -= n
	c.opts.Budget.Release(n)
}

func (c *Conn) setClient(s int) {
	c.client = s
	c.sides[s].kind = kindRequest
	c.sides[1-s].kind = kindResponse
}

// Data parses bytes of side s. b is only valid during the call; ts is the
// capture time of the segment that carried them.
func (c *Conn) Data(s int, b []byte, ts time.Time) {
	d := &c.sides[s&1]
	if c.state != connActive || d.st == stIgnore {
		return
	}
	d.lastTs = ts
	for len(b) > 0 && c.state == connActive {
		switch d.st {
		case stStart:
			i := 0
			for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
				i++
			}
			b = b[i:]
			if len(b) > 0 {
				d.st, d.msgTs, d.tentative = stHeaders, ts, false
			}
		case stHeaders:
			b = c.headers(s&1, d, b, ts)
		case stResync:
			b = c.resync(s&1, d, b, ts)
		case stBody:
			n := min(int64(len(b)), d.remaining)
			d.remaining -= n
			d.body += n
			if d.capBody {
				c.keepBody(d, b[:n])
			}
			b = b[n:]
			if d.remaining == 0 {
				c.messageDone(d, ts)
			}
		case stChunkSize:
			line, rest, ok, tooLong := c.takeLine(d, b, maxChunkLine)
			b = rest
			if tooLong {
				c.framingError(d, ts)
				continue
			}
			if !ok {
				continue
			}
			n, valid := parseChunkSize(line)
			switch {
			case !valid:
				c.framingError(d, ts)
			case n == 0:
				d.st, d.trailers = stTrailers, 0
			default:
				d.st, d.remaining = stChunkData, n
			}
		case stChunkData:
			n := min(int64(len(b)), d.remaining)
			d.remaining -= n
			d.body += n
			if d.capBody {
				c.keepBody(d, b[:n])
			}
			b = b[n:]
			if d.remaining == 0 {
				d.st = stChunkCRLF
			}
		case stChunkCRLF:
			switch b[0] {
			case '\r':
				b = b[1:]
			case '\n':
				b = b[1:]
				d.st = stChunkSize
			default:
				c.framingError(d, ts)
			}
		case stTrailers:
			line, rest, ok, tooLong := c.takeLine(d, b, c.opts.MaxHeaderBytes-d.trailers)
			b = rest
			if tooLong {
				c.framingError(d, ts)
				continue
			}
			if !ok {
				continue
			}
			d.trailers += len(line)
			if len(trimSpace(line)) == 0 {
				c.messageDone(d, ts)
			}
		case stCloseBody:
			d.body += int64(len(b))
			if d.capBody {
				c.keepBody(d, b)
			}
			b = nil
		default: // stIgnore
			b = nil
		}
	}
}

// takeLine returns the next line (with its LF) from the side's buffer and b,
// and the rest of b. ok is false when b ended before the LF (the bytes are
// kept); tooLong when the line would exceed limit.
func (c *Conn) takeLine(d *side, b []byte, limit int) (line, rest []byte, ok, tooLong bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		if len(d.buf)+len(b) > limit || !c.bufAppend(d, b) {
			d.buf = d.buf[:0]
			return nil, nil, false, true
		}
		return nil, nil, false, false
	}
	if len(d.buf)+i+1 > limit {
		d.buf = d.buf[:0]
		return nil, b[i+1:], false, true
	}
	if len(d.buf) == 0 {
		return b[:i+1], b[i+1:], true, false
	}
	if !c.bufAppend(d, b[:i+1]) {
		d.buf = d.buf[:0]
		return nil, b[i+1:], false, true
	}
	line = d.buf
	d.buf = d.buf[:0]
	return line, b[i+1:], true, false
}

// bufAppend appends b to the side's buffer within the budget.
func (c *Conn) bufAppend(d *side, b []byte) bool {
	if c.grow(&d.buf, b) {
		return true
	}
	c.opts.Counters.MemoryRefused.Add(1)
	return false
}

// grow appends b to *buf, charging the budget for a larger capacity; when
// the budget refuses, *buf is unchanged.
func (c *Conn) grow(buf *[]byte, b []byte) bool {
	if len(*buf)+len(b) <= cap(*buf) {
		*buf = append(*buf, b...)
		return true
	}
	nb := append(*buf, b...)
	if !c.reserve(int64(cap(nb) - cap(*buf))) {
		return false
	}
	*buf = nb
	return true
}

// keepBody copies body bytes of side d, up to the capture cap and within
// the budget; what is not kept marks the body cut.
func (c *Conn) keepBody(d *side, b []byte) {
	_, limit := c.opts.Fields.CaptureBodies()
	if room := limit - len(d.raw); len(b) > room {
		b, d.rawCut = b[:max(room, 0)], true
	}
	if len(b) > 0 && !c.grow(&d.raw, b) {
		if !d.rawCut {
			c.opts.Counters.MemoryRefused.Add(1)
		}
		d.rawCut = true
	}
}

// startBody starts capturing the body of the message of side d when body
// capture is on.
func (c *Conn) startBody(d *side) {
	if x := c.opts.Fields; x != nil {
		if on, _ := x.CaptureBodies(); on {
			d.capBody, d.rawCut, d.raw = true, false, d.raw[:0]
		}
	}
}

// endBody decodes the captured body of side d into ex.
func (c *Conn) endBody(d *side, ex *exchange) {
	d.capBody = false
	call := &ex.call
	enc, text, size, trunc := &call.RequestContentEncoding, &call.RequestBody, &call.RequestBodyDecodedSize, &call.RequestBodyTruncated
	captured := &call.RequestBodyCaptured
	if d.kind != kindRequest {
		enc, text, size, trunc = &call.ResponseContentEncoding, &call.ResponseBody, &call.ResponseBodyDecodedSize, &call.ResponseBodyTruncated
		captured = &call.ResponseBodyCaptured
	}
	body := c.opts.Fields.DecodeBody(*enc, d.raw, d.rawCut)
	*captured, *size, *trunc = true, int64(body.Size), body.Truncated
	if n := int64(len(body.Text)); n > 0 && !c.reserve(n) {
		// No memory to keep the text until the call is emitted.
		*size, *trunc = 0, true
	} else {
		ex.charged += n
		*text = str(body.Text)
	}
	d.raw = d.raw[:0]
	if cap(d.raw) > 8<<10 {
		c.freeRaw(d) // do not keep a large buffer per connection
	}
}

// freeRaw drops the side's body buffer and returns its budget.
func (c *Conn) freeRaw(d *side) {
	c.release(int64(cap(d.raw)))
	d.raw = nil
}

// stop ends parsing of the connection and frees its buffers.
func (c *Conn) stop(st connState) {
	c.state = st
	if st == connNonHTTP {
		c.opts.Counters.NonHTTP.Add(1)
	} else {
		c.opts.Counters.Upgraded.Add(1)
	}
	c.bufFree(&c.sides[0])
	c.bufFree(&c.sides[1])
}

// bufFree drops the side's buffers and returns their budget.
func (c *Conn) bufFree(d *side) {
	c.release(int64(cap(d.buf)))
	d.buf = nil
	c.freeRaw(d)
}

// headers accumulates a header block and parses it when complete.
func (c *Conn) headers(s int, d *side, b []byte, ts time.Time) []byte {
	limit := c.opts.MaxHeaderBytes
	if len(d.buf) == 0 {
		if end := headerEnd(b, 0); end >= 0 && end <= limit {
			c.onHeaders(s, d, b[:end], ts)
			return b[end:]
		}
		if _, v := classify(b, d.kind); v == vNo {
			c.startError(s, d)
			return b
		}
		if len(b) >= limit || !c.bufAppend(d, b) {
			return c.tooLarge(d, b)
		}
		return nil
	}
	old := len(d.buf)
	take := b
	if old+len(take) > limit {
		take = take[:limit-old]
	}
	if !c.bufAppend(d, take) {
		d.buf = d.buf[:0]
		return c.tooLarge(d, b)
	}
	end := headerEnd(d.buf, max(0, old-3))
	if end < 0 {
		if _, v := classify(d.buf, d.kind); v == vNo {
			d.buf = d.buf[:0]
			c.startError(s, d)
			return b[len(take):]
		}
		if len(d.buf) >= limit {
			d.buf = d.buf[:0]
			return c.tooLarge(d, b[len(take):])
		}
		return nil
	}
	block := d.buf[:end]
	d.buf = d.buf[:0]
	c.onHeaders(s, d, block, ts)
	if cap(d.buf) > 8<<10 {
		c.bufFree(d) // do not keep a large buffer per connection
	}
	return b[end-old:]
}

// startError handles bytes that cannot start a message.
func (c *Conn) startError(s int, d *side) {
	switch {
	case !c.everHTTP && d.synSeen && d.msgs == 0 && !d.tentative:
		// The first bytes of a stream seen from its start are not HTTP.
		c.stop(connNonHTTP)
		return
	case c.everHTTP && !d.tentative && (d.msgs > 0 || d.synSeen):
		// (The first bytes of a side joined mid-stream are expected not
		// to start a message.)
		c.opts.Counters.ParseErrors.Add(1)
	}
	d.st, d.tentative = stResync, false
}

// tooLarge handles a header block over the cap; rest are the bytes not yet
// consumed. The current line is skipped so that resync does not find a start
// line inside the rejected one.
func (c *Conn) tooLarge(d *side, rest []byte) []byte {
	if c.everHTTP && !d.tentative {
		c.opts.Counters.ParseErrors.Add(1)
	}
	d.st, d.tentative = stResync, false
	if i := bytes.IndexByte(rest, '\n'); i >= 0 {
		return rest[i+1:]
	}
	return nil
}

// framingError handles bad chunk framing: the message is cut and the side
// resyncs.
func (c *Conn) framingError(d *side, ts time.Time) {
	c.opts.Counters.ParseErrors.Add(1)
	if d.ex != nil {
		d.ex.truncated = true
	}
	c.messageDone(d, ts)
	d.st = stResync
}

// resync scans for a start line at the start of a line or of a segment
// (messages usually start a segment, even right after a body).
func (c *Conn) resync(s int, d *side, b []byte, ts time.Time) []byte {
	if _, v := classify(b, d.kind); v != vNo {
		d.st, d.msgTs, d.tentative = stHeaders, ts, true
		return b
	}
	i := len(b)
	if j := bytes.IndexByte(b, '\n'); j >= 0 {
		i = j + 1
	}
	for i < len(b) {
		if _, v := classify(b[i:], d.kind); v != vNo {
			c.scanned(d, i)
			d.st, d.msgTs, d.tentative = stHeaders, ts, true
			return b[i:]
		}
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		i += j + 1
	}
	c.scanned(d, len(b))
	return nil
}

func (c *Conn) scanned(d *side, n int) {
	if c.everHTTP {
		return
	}
	d.scanned += n
	if d.scanned > c.opts.MaxResyncScan {
		c.stop(connNonHTTP)
	}
}

// onHeaders handles a complete header block.
func (c *Conn) onHeaders(s int, d *side, block []byte, ts time.Time) {
	k, v := classify(block, d.kind)
	if v != vYes {
		c.startError(s, d)
		return
	}
	// The call's strings come from the block: charge them, and a new
	// call, until the call is emitted.
	charge := int64(len(block))
	if k == kindRequest || c.awaiting() == nil {
		charge += exchangeCost
	}
	if !c.reserve(charge) {
		c.opts.Counters.MemoryRefused.Add(1)
		c.tooLarge(d, nil)
		return
	}
	if c.client < 0 {
		if k == kindRequest {
			c.setClient(s)
		} else {
			c.setClient(1 - s)
		}
	}
	c.everHTTP = true
	d.tentative = false
	d.msgs++
	d.body, d.remaining = 0, 0
	line, rest := block, []byte(nil)
	if i := bytes.IndexByte(block, '\n'); i >= 0 {
		line, rest = block[:i], block[i+1:]
	}
	line = trimSpace(line)
	var h headerInfo
	if x := c.opts.Fields; x != nil {
		h.collect, h.fields = true, x.HeaderBuf()
	}
	parseHeaders(rest, &h)
	if k == kindRequest {
		c.onRequest(d, line, len(block), &h, ts, charge)
	} else {
		c.onResponse(d, line, len(block), &h, ts, charge)
	}
}

func (c *Conn) newExchange() *exchange {
	ex := &exchange{}
	ex.call.ClientAddr = c.addr[c.client]
	ex.call.ServerAddr = c.addr[1-c.client]
	return ex
}

// onRequest handles a request's header block; charge is what onHeaders
// reserved for it.
func (c *Conn) onRequest(d *side, line []byte, size int, h *headerInfo, ts time.Time, charge int64) {
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	method, target, version := line[:sp1], line[sp1+1:sp2], line[sp2+1:]
	ex := c.newExchange()
	ex.charged = charge
	call := &ex.call
	call.RequestStart = d.msgTs
	call.Method = methodString(method)
	call.HTTPVersion = versionString(version[len(version)-1])
	host := h.host
	if i := bytes.Index(target, []byte("://")); i > 0 && target[0] != '/' {
		// absolute-form: http://host/path
		rest := target[i+3:]
		j := bytes.IndexAny(rest, "/?")
		if j < 0 {
			j = len(rest)
		}
		if host == nil {
			host = rest[:j]
		}
		target = rest[j:]
		if len(target) == 0 {
			target = []byte("/")
		}
	}
	var pk strPack
	path := target
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		path = target[:q]
		pk.add(&call.Query, target[q+1:])
	}
	pk.add(&call.Path, path)
	pk.add(&call.Host, host)
	pk.add(&call.RequestContentType, h.contentType)
	pk.add(&call.UserAgent, h.userAgent)
	pk.add(&call.XForwardedFor, h.xff)
	pk.add(&call.XRequestID, h.xRequestID)
	pk.add(&call.Traceparent, h.traceparent)
	tplChanged := false
	if x := c.opts.Fields; x != nil {
		r := x.Request(h.fields, path, call.ClientAddr.Addr(), d.msgTs)
		pk.add(&call.Identification, r.Identification)
		if tplChanged = r.TemplateChanged; tplChanged {
			pk.add(&call.Template, r.Template)
		}
		pk.add(&call.RequestHeaders, r.Headers)
		pk.add(&call.RequestContentEncoding, r.ContentEncoding)
		if r.HasJWT {
			pk.add(&call.JWTIssuer, r.JWT.Iss)
			pk.add(&call.JWTSubject, r.JWT.Sub)
			pk.add(&call.JWTAudience, r.JWT.Aud)
			call.JWTIssuedAt = unixNano(r.JWT.Iat, r.JWT.HasIat)
			call.JWTNotBefore = unixNano(r.JWT.Nbf, r.JWT.HasNbf)
			call.JWTExpires = unixNano(r.JWT.Exp, r.JWT.HasExp)
		}
		call.Origin = r.Origin
		call.TokenNotYetValid, call.TokenExpired = r.NotYetValid, r.Expired
		call.CredentialsCount, call.MultipleCredentials = r.Credentials, r.Multiple
	}
	pk.copy()
	if !tplChanged && c.opts.Fields != nil {
		call.Template = call.Path
	}
	call.RequestHeaderSize = int64(size)
	ex.head = call.Method == "HEAD"
	ex.connect = call.Method == "CONNECT"
	if d.gapNext {
		ex.gap, d.gapNext = true, false
	}
	if len(c.pending) >= c.opts.MaxPending {
		c.opts.Counters.PendingDropped.Add(1)
		old := c.pending[0]
		c.pending = c.pending[:copy(c.pending, c.pending[1:])]
		c.finish(old)
	}
	c.pending = append(c.pending, ex)
	d.ex = ex
	c.startBody(d)
	switch {
	case h.chunked:
		d.st = stChunkSize
	case h.badLength || h.hasTE:
		// Unknown framing: the body cannot be delimited.
		c.opts.Counters.ParseErrors.Add(1)
		ex.truncated = true
		c.messageDone(d, ts)
		d.st = stResync
	case h.contentLength > 0:
		d.st, d.remaining = stBody, h.contentLength
	default:
		c.messageDone(d, ts)
	}
}

// awaiting returns the first pending exchange without its response, or nil.
func (c *Conn) awaiting() *exchange {
	for _, p := range c.pending {
		if !p.respDone {
			return p
		}
	}
	return nil
}

// onResponse handles a response's header block; charge is what onHeaders
// reserved for it (a new call's included when none awaits a response).
func (c *Conn) onResponse(d *side, line []byte, size int, h *headerInfo, ts time.Time, charge int64) {
	status := int(line[9]-'0')*100 + int(line[10]-'0')*10 + int(line[11]-'0')
	if status < 200 && status != 101 {
		// Interim response (100 Continue, 102, 103): not the final one.
		c.release(charge)
		d.st = stStart
		return
	}
	ex := c.awaiting()
	if ex != nil {
		ex.charged += charge
	} else {
		ex = c.newExchange()
		ex.charged = charge
		ex.noRequest = true
		ex.reqDone = true
		ex.call.HTTPVersion = versionString(line[7])
	}
	call := &ex.call
	call.ResponseStart = d.msgTs
	call.Status = status
	call.ResponseHeaderSize = int64(size)
	if x := c.opts.Fields; x != nil {
		r := x.Response(h.fields)
		var pk strPack
		pk.add(&call.ResponseContentType, h.contentType)
		pk.add(&call.ResponseHeaders, r.Headers)
		pk.add(&call.ResponseContentEncoding, r.ContentEncoding)
		pk.copy()
	} else {
		call.ResponseContentType = str(h.contentType)
	}
	if d.gapNext {
		ex.gap, d.gapNext = true, false
	}
	d.ex = ex
	c.startBody(d)
	switch {
	case status == 101 || ex.connect && status < 300:
		ex.upgr = true
		c.messageDone(d, ts)
		c.stop(connUpgraded)
	case ex.head || status == 204 || status == 304:
		c.messageDone(d, ts)
	case h.chunked:
		d.st = stChunkSize
	case h.hasTE || h.contentLength < 0:
		d.st = stCloseBody
		if h.badLength {
			c.opts.Counters.ParseErrors.Add(1)
		}
	case h.contentLength > 0:
		d.st, d.remaining = stBody, h.contentLength
	default:
		c.messageDone(d, ts)
	}
}

// messageDone ends the message of side d, its last byte seen at ts.
func (c *Conn) messageDone(d *side, ts time.Time) {
	ex := d.ex
	d.ex = nil
	d.st = stStart
	if ex == nil {
		d.capBody = false
		return
	}
	if d.capBody {
		c.endBody(d, ex)
	}
	retrans := d.retrans - d.retransAt
	d.retransAt = d.retrans
	if d.kind == kindRequest {
		ex.call.RequestEnd = ts
		ex.call.RequestBodySize = d.body
		ex.call.RequestRetransmissions = retrans
		ex.reqDone = true
	} else {
		ex.call.ResponseEnd = ts
		ex.call.ResponseBodySize = d.body
		ex.call.ResponseRetransmissions = retrans
		ex.respDone = true
		if ex.noRequest {
			c.finish(ex)
			return
		}
	}
	for len(c.pending) > 0 && c.pending[0].reqDone && c.pending[0].respDone {
		p := c.pending[0]
		c.pending = c.pending[:copy(c.pending, c.pending[1:])]
		c.finish(p)
	}
	if len(c.pending) == 0 && cap(c.pending) > 4 {
		c.pending = nil // a burst of pipelined requests is over
	}
}

// finish emits ex and releases its charge.
func (c *Conn) finish(ex *exchange) {
	c.release(ex.charged)
	ex.charged = 0
	call := &ex.call
	switch {
	case ex.upgr:
		call.ParseStatus = model.StatusUpgraded
	case ex.gap:
		call.ParseStatus = model.StatusGap
	case ex.truncated || !ex.reqDone:
		call.ParseStatus = model.StatusTruncated
	case ex.noRequest:
		call.ParseStatus = model.StatusNoRequest
	case !ex.respDone:
		call.ParseStatus = model.StatusNoResponse
	default:
		call.ParseStatus = model.StatusOK
	}
	c.opts.Counters.Calls.Add(1)
	c.emit(call)
}

// unixNano converts a claim time, zero when absent.
func unixNano(ns int64, has bool) time.Time {
	if !has {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// Retransmitted tells that side s received a segment repeating bytes
// already seen. It is counted on the message of that side that ends next
// (model.HTTPCall.RequestRetransmissions / ResponseRetransmissions).
func (c *Conn) Retransmitted(s int) { c.sides[s&1].retrans++ }

// Gap tells that n bytes of side s were lost before the next Data.
func (c *Conn) Gap(s int, n int, ts time.Time) {
	d := &c.sides[s&1]
	if c.state != connActive || d.st == stIgnore || n <= 0 {
		return
	}
	d.rawCut = true
	switch d.st {
	case stBody:
		d.ex.gap = true
		if int64(n) <= d.remaining {
			d.remaining -= int64(n)
			d.body += int64(n)
			if d.remaining == 0 {
				c.messageDone(d, ts)
			}
			return
		}
		d.body += d.remaining
		c.messageDone(d, ts)
	case stCloseBody:
		d.ex.gap = true
		d.body += int64(n)
		return
	case stChunkSize, stChunkData, stChunkCRLF, stTrailers:
		d.ex.gap = true
		d.buf = d.buf[:0]
		c.messageDone(d, ts)
	case stHeaders:
		d.buf = d.buf[:0]
	}
	// Bytes of a following message may have been lost too: resync, and
	// mark the next message.
	d.gapNext = true
	d.st, d.tentative = stResync, false
}

// End tells that side s finished (FIN or RST). A close-delimited body ends;
// a message in progress is truncated.
func (c *Conn) End(s int, ts time.Time) {
	d := &c.sides[s&1]
	if d.st == stIgnore {
		return
	}
	if c.state == connActive {
		switch d.st {
		case stCloseBody:
			c.messageDone(d, d.lastTs)
		case stBody, stChunkSize, stChunkData, stChunkCRLF, stTrailers:
			d.ex.truncated = true
			c.messageDone(d, d.lastTs)
		}
	}
	d.st = stIgnore
	c.bufFree(d)
}

// Close ends the connection: both sides end, and requests still waiting for
// a response are emitted (no_response, or truncated when the request itself
// was cut).
func (c *Conn) Close(ts time.Time) {
	c.End(0, ts)
	c.End(1, ts)
	for _, p := range c.pending {
		c.finish(p)
	}
	c.pending = nil
}
