package pcapgen

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"
)

// Default connection parameters.
const (
	DefaultMSS = 1460
	DefaultRTT = 200 * time.Microsecond

	clientWindow = 64240
	serverWindow = 65160
)

// ConnOptions tunes a generated TCP connection. The zero value gives a clean
// connection with a handshake, MSS 1460 and a 200µs round-trip time.
type ConnOptions struct {
	// MSS is the maximum payload per data segment (default 1460).
	MSS int
	// Rand drives impairments. When nil the connection is deterministic and
	// no impairment is applied, whatever the probabilities.
	Rand *rand.Rand
	// ReorderProb is the probability that a data segment is captured after
	// the segment that follows it (only within one Client/Server call).
	ReorderProb float64
	// RetransmitProb is the probability that a data segment is captured a
	// second time, RTT/2 later (a spurious retransmission, same bytes).
	RetransmitProb float64
	// LossProb is the probability that a data segment is missing from the
	// capture. The peer still acknowledges it: this models capture loss
	// (the segment crossed the network but the sniffer missed it), which
	// leaves a permanent gap in the captured stream.
	LossProb float64
	// NoHandshake starts the connection mid-stream: no SYN is captured.
	NoHandshake bool
	// RTT is the round-trip time (default 200µs). Every send advances the
	// connection clock by about RTT/2 plus the segments' transmission time.
	RTT time.Duration
}

// Conn is one generated TCP connection. The capture point is modelled near
// the client. Each Conn has its own clock, starting at the time given to
// NewConn; every frame gets the current clock value, and the clock only
// moves forward.
type Conn struct {
	w      *Writer
	client netip.AddrPort
	server netip.AddrPort
	cMAC   [6]byte
	sMAC   [6]byte
	opts   ConnOptions
	rtt    int64
	gap    int64 // time between consecutive data segments of one burst

	now       int64
	cSeq      uint32 // next sequence number the client sends
	sSeq      uint32 // next sequence number the server sends
	cID, sID  uint16 // IPv4 identification counters
	closed    bool
	hash      uint64
	exchanges int

	loseNext []int // segment indexes of the next send not to capture
	events   []event
	lastSend sendTimes
	scratch  []byte // message buffer reused by HTTP helpers
}

// errMixedFamilies is reported when client and server address families differ.
var errMixedFamilies = errors.New("pcapgen: client and server must both be IPv4 or both IPv6")

// event is one frame of a send burst, before time ordering.
type event struct {
	ts      int64
	order   int
	ack     bool // pure ACK from the receiver
	ackNo   uint32
	seq     uint32
	payload []byte
	psh     bool
}

// sendTimes reports when a send's data was captured.
type sendTimes struct {
	first, last int64 // first and last data segment captured (originals)
	lost        bool  // at least one segment missing from the capture
}

// NewConn starts a TCP connection between client and server at time start:
// SYN, SYN-ACK and ACK unless opts.NoHandshake is set.
func (w *Writer) NewConn(client, server netip.AddrPort, start time.Time, opts ConnOptions) *Conn {
	if opts.MSS <= 0 {
		opts.MSS = DefaultMSS
	}
	if opts.RTT <= 0 {
		opts.RTT = DefaultRTT
	}
	c := &Conn{
		w:      w,
		client: client,
		server: server,
		cMAC:   macFor(client.Addr()),
		sMAC:   macFor(server.Addr()),
		opts:   opts,
		rtt:    int64(opts.RTT),
		now:    start.UnixNano(),
	}
	c.gap = max(int64(time.Microsecond), c.rtt/32)
	if client.Addr().Is4() != server.Addr().Is4() {
		w.fail(errMixedFamilies)
		c.closed = true
		return c
	}
	h := fnv.New64a()
	b, _ := client.MarshalBinary()
	h.Write(b)
	b, _ = server.MarshalBinary()
	h.Write(b)
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(c.now))
	h.Write(ts[:])
	c.hash = h.Sum64()
	c.cSeq = uint32(c.hash)
	c.sSeq = uint32(c.hash >> 32)
	c.cID = uint16(c.hash >> 16)
	c.sID = uint16(c.hash >> 48)

	if !opts.NoHandshake {
		c.send(true, c.cSeq, 0, flagSYN, clientWindow, uint16(opts.MSS), nil)
		c.cSeq++
		c.now += c.rtt
		c.send(false, c.sSeq, c.cSeq, flagSYN|flagACK, serverWindow, uint16(opts.MSS), nil)
		c.sSeq++
		c.now += c.rtt / 20
		c.send(true, c.cSeq, c.sSeq, flagACK, clientWindow, 0, nil)
		c.now += c.gap
	}
	return c
}

// ClientAddr returns the client address and port.
func (c *Conn) ClientAddr() netip.AddrPort { return c.client }

// ServerAddr returns the server address and port.
func (c *Conn) ServerAddr() netip.AddrPort { return c.server }

// Now returns the connection clock.
func (c *Conn) Now() time.Time { return time.Unix(0, c.now) }

// Advance moves the connection clock forward by d (negative d is ignored).
func (c *Conn) Advance(d time.Duration) {
	if d > 0 {
		c.now += int64(d)
	}
}

// Closed reports whether Close or Reset was called.
func (c *Conn) Closed() bool { return c.closed }

// LoseSegment makes the data segment with the given index (0-based) of the
// next Client or Server call missing from the capture, while the peer still
// acknowledges it (capture loss). It works without Rand.
func (c *Conn) LoseSegment(index int) { c.loseNext = append(c.loseNext, index) }

// Client sends data from the client to the server, split into MSS-sized
// segments, and captures the server's acknowledgements.
func (c *Conn) Client(data []byte) { c.lastSend = c.data(true, data) }

// Server sends data from the server to the client, split into MSS-sized
// segments, and captures the client's acknowledgements.
func (c *Conn) Server(data []byte) { c.lastSend = c.data(false, data) }

// Close ends the connection gracefully: FIN from the client, FIN+ACK from
// the server, final ACK from the client.
func (c *Conn) Close() {
	if c.closed {
		return
	}
	c.closed = true
	c.send(true, c.cSeq, c.sSeq, flagFIN|flagACK, clientWindow, 0, nil)
	c.cSeq++
	c.now += c.rtt / 2
	c.send(false, c.sSeq, c.cSeq, flagFIN|flagACK, serverWindow, 0, nil)
	c.sSeq++
	c.now += c.rtt / 2
	c.send(true, c.cSeq, c.sSeq, flagACK, clientWindow, 0, nil)
	c.now += c.gap
}

// Reset aborts the connection with an RST+ACK from the client (fromClient)
// or from the server.
func (c *Conn) Reset(fromClient bool) {
	if c.closed {
		return
	}
	c.closed = true
	if fromClient {
		c.send(true, c.cSeq, c.sSeq, flagRST|flagACK, 0, 0, nil)
	} else {
		c.send(false, c.sSeq, c.cSeq, flagRST|flagACK, 0, 0, nil)
	}
	c.now += c.gap
}

// send emits one segment at the current clock.
func (c *Conn) send(fromClient bool, seq, ack uint32, flags byte, window uint16, mss uint16, payload []byte) {
	c.emitAt(c.now, fromClient, seq, ack, flags, window, mss, payload)
}

func (c *Conn) emitAt(ts int64, fromClient bool, seq, ack uint32, flags byte, window uint16, mss uint16, payload []byte) {
	s := segment{seq: seq, ack: ack, flags: flags, window: window, mss: mss, payload: payload}
	if fromClient {
		s.src, s.dst, s.srcMAC, s.dstMAC = c.client, c.server, c.cMAC, c.sMAC
		s.ipID = c.cID
		c.cID++
	} else {
		s.src, s.dst, s.srcMAC, s.dstMAC = c.server, c.client, c.sMAC, c.cMAC
		s.ipID = c.sID
		c.sID++
	}
	c.w.emit(ts, &s)
}

// data sends one application message in one direction and returns when its
// segments were captured.
func (c *Conn) data(fromClient bool, data []byte) sendTimes {
	if c.closed {
		c.w.fail(errClosed)
		return sendTimes{first: c.now, last: c.now}
	}
	lose := c.loseNext
	c.loseNext = nil
	if len(data) == 0 {
		return sendTimes{first: c.now, last: c.now}
	}
	seqp, ackp := &c.cSeq, &c.sSeq
	if !fromClient {
		seqp, ackp = &c.sSeq, &c.cSeq
	}
	mss := c.opts.MSS
	nseg := (len(data) + mss - 1) / mss
	r := c.opts.Rand
	ev := c.events[:0]
	order := 0
	base := c.now
	st := sendTimes{first: -1}
	segTime := make([]int64, nseg)
	for i := range nseg {
		segTime[i] = base + int64(i)*c.gap
	}
	if r != nil && c.opts.ReorderProb > 0 {
		for i := 0; i+1 < nseg; i++ {
			if r.Float64() < c.opts.ReorderProb {
				segTime[i], segTime[i+1] = segTime[i+1], segTime[i]
				i++ // do not move the same segment twice
			}
		}
	}
	seq0 := *seqp
	var lastAckAt, arrived int64
	for i := range nseg {
		lo := i * mss
		hi := min(lo+mss, len(data))
		seq := seq0 + uint32(lo)
		arrived = max(arrived, segTime[i])
		captured := !slices.Contains(lose, i)
		if captured && r != nil && c.opts.LossProb > 0 && r.Float64() < c.opts.LossProb {
			captured = false
		}
		if captured {
			ev = append(ev, event{ts: segTime[i], order: order, seq: seq, payload: data[lo:hi], psh: i == nseg-1})
			order++
			if st.first < 0 || segTime[i] < st.first {
				st.first = segTime[i]
			}
			st.last = max(st.last, segTime[i])
			if r != nil && c.opts.RetransmitProb > 0 && r.Float64() < c.opts.RetransmitProb {
				ev = append(ev, event{ts: segTime[i] + c.rtt/2, order: order, seq: seq, payload: data[lo:hi], psh: i == nseg-1})
				order++
			}
		} else {
			st.lost = true
		}
		// Delayed ACK: the receiver acknowledges every second segment and
		// the last one; cumulative, once every earlier segment has arrived.
		if i%2 == 1 || i == nseg-1 {
			at := max(arrived+c.rtt/2, lastAckAt)
			lastAckAt = at
			ev = append(ev, event{ts: at, order: order, ack: true, ackNo: seq0 + uint32(hi)})
			order++
		}
	}
	if st.first < 0 {
		st.first, st.last = base, base
	}
	slices.SortFunc(ev, func(a, b event) int {
		if a.ts != b.ts {
			if a.ts < b.ts {
				return -1
			}
			return 1
		}
		return a.order - b.order
	})
	ackNo := *ackp
	var win uint16 = clientWindow
	var peerWin uint16 = serverWindow
	if !fromClient {
		win, peerWin = serverWindow, clientWindow
	}
	for i := range ev {
		e := &ev[i]
		if e.ack {
			c.emitAt(e.ts, !fromClient, ackNo, e.ackNo, flagACK, peerWin, 0, nil)
		} else {
			flags := byte(flagACK)
			if e.psh {
				flags |= flagPSH
			}
			c.emitAt(e.ts, fromClient, e.seq, ackNo, flags, win, 0, e.payload)
		}
		c.now = max(c.now, e.ts)
	}
	*seqp = seq0 + uint32(len(data))
	c.now += c.gap
	clear(ev)
	c.events = ev[:0]
	return st
}
