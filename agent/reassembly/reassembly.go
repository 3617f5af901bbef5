// Package reassembly orders the bytes of one direction of a TCP connection.
//
// A Stream tracks sequence numbers. Segments that arrive in order are handed
// to the Sink as they are, without copying. Segments that arrive early are
// copied into a bounded per-stream buffer whose memory (by capacity) is also
// charged to a Budget shared with everything else that holds decode memory;
// retransmitted and overlapping bytes are delivered once.
// Bytes that are never seen are reported to the Sink as a gap when the loss
// is proven: when a buffer cap is hit, when the peer acknowledges data past
// the hole, or when the stream is flushed.
//
// A Stream is not safe for concurrent use. Counters may be read from any
// goroutine.
package reassembly

import (
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/orbweaver/orbweaver/agent/membudget"
)

// Sink receives the ordered byte stream of one direction.
type Sink interface {
	// Data delivers the next bytes of the stream. b is only valid during
	// the call. ts is the capture time of the segment that carried them,
	// or, for bytes buffered behind a hole that a later segment filled,
	// the capture time of that segment when it is later.
	Data(b []byte, ts time.Time)
	// Gap reports that n bytes were lost before the next Data.
	Gap(n int, ts time.Time)
	// End reports that the direction is finished (FIN reached, or the
	// connection was reset). No call follows End.
	End(ts time.Time)
}

// RetransmissionSink is implemented by Sinks that want to know when a
// segment repeats bytes already seen (a retransmission or an overlap). It
// is called before any new bytes of that segment are delivered.
type RetransmissionSink interface {
	Retransmitted(ts time.Time)
}

// Counters count reassembly events across streams. All fields are safe to
// read concurrently.
type Counters struct {
	// Retransmissions counts segments whose bytes had all been seen already.
	Retransmissions atomic.Uint64
	// RetransmittedBytes counts bytes seen more than once (full
	// retransmissions and overlaps), which are delivered only once.
	RetransmittedBytes atomic.Uint64
	// Overlaps counts segments that partly repeat bytes already seen.
	Overlaps atomic.Uint64
	// OutOfOrder counts segments that arrived ahead of a hole and were
	// buffered.
	OutOfOrder atomic.Uint64
	// Gaps counts holes skipped; GapBytes their total size.
	Gaps     atomic.Uint64
	GapBytes atomic.Uint64
	// CapDroppedBytes counts the part of GapBytes skipped because a buffer
	// cap (per stream or total) was reached rather than because the loss
	// was proven.
	CapDroppedBytes atomic.Uint64
	// OutOfWindow counts segments ignored because they start more than
	// 1 GiB (the largest TCP window) past the next expected byte.
	OutOfWindow atomic.Uint64
}

// maxWindow is the largest TCP receive window (65535 << 14).
const maxWindow = 1 << 30

// Budget accounts the memory that streams hold in out-of-order buffers,
// shared with whatever else the caller charges to it.
type Budget = membudget.Budget

// Options configure a Stream. They are shared by many streams and must not
// change while streams use them.
type Options struct {
	// MaxBufferBytes caps the out-of-order bytes buffered by one stream.
	MaxBufferBytes int
	// Budget is charged the memory of the buffered segments (their
	// capacity, and the slice that holds them). Required. When it refuses,
	// the stream skips its own oldest hole as a gap to make room, as when
	// MaxBufferBytes is reached.
	Budget Budget
	// Counters receives event counts. Required.
	Counters *Counters
}

// segment is a buffered out-of-order segment.
type segment struct {
	seq  uint32
	data []byte
	ts   time.Time
}

// segmentSize is the memory of one entry of a stream's segment slice.
const segmentSize = int64(unsafe.Sizeof(segment{}))

// Stream reassembles one direction. The zero value is ready after Init.
// (Fields are ordered to keep the struct small: one exists per direction of
// every parsed connection.)
type Stream struct {
	opts    *Options
	sink    Sink
	ooo     []segment
	held    int    // bytes in ooo
	charged int64  // memory charged to the budget: ooo's capacity and its segments'
	next    uint32 // next expected sequence number
	finSeq  uint32 // sequence number of the FIN
	maxAck  uint32 // highest ACK sent by the peer for this direction
	started bool
	ended   bool
	hasFin  bool
	hasAck  bool
}

// Init prepares s to deliver to sink.
func (s *Stream) Init(opts *Options, sink Sink) {
	*s = Stream{opts: opts, sink: sink}
}

// retransmitted tells the sink about a segment that repeats bytes.
func (s *Stream) retransmitted(ts time.Time) {
	if r, ok := s.sink.(RetransmissionSink); ok {
		r.Retransmitted(ts)
	}
}

// Started reports whether the stream has seen a SYN or data.
func (s *Stream) Started() bool { return s.started }

// Ended reports whether End was delivered.
func (s *Stream) Ended() bool { return s.ended }

// Next returns the next expected sequence number (meaningful once Started).
func (s *Stream) Next() uint32 { return s.next }

// Buffered returns the bytes held out of order.
func (s *Stream) Buffered() int { return s.held }

// Memory returns the bytes charged to the Budget now: the capacity of the
// buffered copies and of the slice holding them. It is 0 when nothing is
// buffered.
func (s *Stream) Memory() int64 { return s.charged }

// seqDiff returns a-b in sequence space.
func seqDiff(a, b uint32) int64 { return int64(int32(a - b)) }

// Segment processes one TCP segment of this direction. syn and fin are the
// segment's flags; payload is only valid during the call.
func (s *Stream) Segment(seq uint32, syn, fin bool, payload []byte, ts time.Time) {
	if s.ended {
		return
	}
	if syn {
		if !s.started {
			s.started = true
			s.next = seq + 1
		}
		seq++ // data in a SYN starts after it
	}
	if !s.started {
		if len(payload) == 0 && !fin {
			return
		}
		// Joined mid-stream: start where this segment starts.
		s.started = true
		s.next = seq
	}
	if fin {
		f := seq + uint32(len(payload))
		if !s.hasFin || seqDiff(f, s.finSeq) < 0 {
			s.hasFin, s.finSeq = true, f
		}
	}
	if len(payload) > 0 {
		s.data(seq, payload, ts)
	}
	s.checkFin(ts)
}

func (s *Stream) data(seq uint32, payload []byte, ts time.Time) {
	c := s.opts.Counters
	d := seqDiff(seq, s.next)
	if d < 0 {
		end := seqDiff(seq+uint32(len(payload)), s.next)
		if end <= 0 {
			c.Retransmissions.Add(1)
			c.RetransmittedBytes.Add(uint64(len(payload)))
			s.retransmitted(ts)
			return
		}
		c.Overlaps.Add(1)
		c.RetransmittedBytes.Add(uint64(-d))
		s.retransmitted(ts)
		payload = payload[-d:]
		d = 0
	}
	if d == 0 {
		s.next += uint32(len(payload))
		s.sink.Data(payload, ts)
		if len(s.ooo) > 0 {
			s.drain(ts) // the hole is filled now
		}
		return
	}
	if d > maxWindow {
		// Far beyond any TCP window: not this stream's data.
		c.OutOfWindow.Add(1)
		return
	}
	// Ahead of a hole. If the peer already acknowledged past the hole
	// start, the hole was lost by the capture: skip it now.
	if s.hasAck && seqDiff(s.maxAck, seq) >= 0 && len(s.ooo) == 0 {
		s.gap(uint32(d), ts, false)
		s.data(seq, payload, ts)
		return
	}
	c.OutOfOrder.Add(1)
	s.buffer(seq, payload, ts)
}

// buffer keeps a copy of an early segment, making room by skipping holes when
// a cap is reached or the budget refuses.
func (s *Stream) buffer(seq uint32, payload []byte, ts time.Time) {
	for len(s.ooo) > 0 && s.held+len(payload) > s.opts.MaxBufferBytes {
		if s.skipFirst(seq, payload, ts) {
			return
		}
	}
	if s.held+len(payload) > s.opts.MaxBufferBytes {
		// Even an empty buffer cannot hold it: skip straight to it.
		s.skipTo(seq, payload, ts)
		return
	}
	// append rounds the capacity up to the allocation's size class, so
	// the charge is the memory really held.
	cp := append([]byte(nil), payload...)
	for {
		grow := 0
		if len(s.ooo) == cap(s.ooo) {
			grow = max(2, 2*cap(s.ooo)) - cap(s.ooo)
		}
		cost := int64(cap(cp)) + int64(grow)*segmentSize
		if s.opts.Budget.Reserve(cost) {
			s.charged += cost
			if grow > 0 {
				n := make([]segment, len(s.ooo), cap(s.ooo)+grow)
				copy(n, s.ooo)
				s.ooo = n
			}
			break
		}
		if len(s.ooo) == 0 {
			s.skipTo(seq, payload, ts)
			return
		}
		if s.skipFirst(seq, payload, ts) {
			return
		}
	}
	i := len(s.ooo)
	for i > 0 && seqDiff(s.ooo[i-1].seq, seq) > 0 {
		i--
	}
	s.ooo = append(s.ooo, segment{})
	copy(s.ooo[i+1:], s.ooo[i:])
	s.ooo[i] = segment{seq: seq, data: cp, ts: ts}
	s.held += len(cp)
}

// skipFirst skips the hole before the first buffered segment (a cap was
// hit) and delivers what becomes contiguous. When the pending segment
// (seq, payload) became in order or old, it is handled and skipFirst
// reports true.
func (s *Stream) skipFirst(seq uint32, payload []byte, ts time.Time) bool {
	first := s.ooo[0]
	if d := seqDiff(first.seq, s.next); d > 0 {
		s.gap(uint32(d), first.ts, true)
	}
	s.drain(time.Time{})
	if d := seqDiff(seq, s.next); d <= 0 {
		s.data(seq, payload, ts)
		return true
	}
	return false
}

// skipTo skips the hole before an early segment that cannot be buffered
// and delivers the segment.
func (s *Stream) skipTo(seq uint32, payload []byte, ts time.Time) {
	s.gap(uint32(seqDiff(seq, s.next)), ts, true)
	s.data(seq, payload, ts)
}

// drain delivers buffered segments that have become contiguous. When a hole
// was filled by data captured at filled (non-zero), the bytes after it are
// delivered with that time if it is later than their own: they were only
// complete then (as tshark reports a reassembled message on the frame that
// completes it). Bytes after a skipped hole keep their own time.
func (s *Stream) drain(filled time.Time) {
	c := s.opts.Counters
	n := 0
	for _, sg := range s.ooo {
		d := seqDiff(sg.seq, s.next)
		if d > 0 {
			break
		}
		n++
		p := sg.data
		if end := seqDiff(sg.seq+uint32(len(p)), s.next); end <= 0 {
			c.Retransmissions.Add(1)
			c.RetransmittedBytes.Add(uint64(len(p)))
			s.retransmitted(sg.ts)
			continue
		}
		if d < 0 {
			c.Overlaps.Add(1)
			c.RetransmittedBytes.Add(uint64(-d))
			s.retransmitted(sg.ts)
			p = p[-d:]
		}
		s.next += uint32(len(p))
		at := sg.ts
		if filled.After(at) {
			at = filled
		}
		s.sink.Data(p, at)
	}
	if n == 0 {
		return
	}
	var freed int64
	for i := 0; i < n; i++ {
		s.held -= len(s.ooo[i].data)
		freed += int64(cap(s.ooo[i].data))
	}
	m := copy(s.ooo, s.ooo[n:])
	clear(s.ooo[m:])
	s.ooo = s.ooo[:m]
	if m == 0 {
		// Nothing buffered: do not keep the slice either.
		freed += int64(cap(s.ooo)) * segmentSize
		s.ooo = nil
	}
	s.charged -= freed
	s.opts.Budget.Release(freed)
}

func (s *Stream) gap(n uint32, ts time.Time, capped bool) {
	if n == 0 {
		return
	}
	c := s.opts.Counters
	c.Gaps.Add(1)
	c.GapBytes.Add(uint64(n))
	if capped {
		c.CapDroppedBytes.Add(uint64(n))
	}
	s.next += n
	s.sink.Gap(int(n), ts)
}

func (s *Stream) checkFin(ts time.Time) {
	if s.hasFin && !s.ended && seqDiff(s.finSeq, s.next) <= 0 {
		s.end(ts)
	}
}

func (s *Stream) end(ts time.Time) {
	s.ended = true
	s.release()
	s.sink.End(ts)
}

// Missing reports that the n bytes starting at seq were sent but cut from
// the capture (snap length). When they are the next bytes expected they are
// skipped at once as a gap; otherwise the hole is found later like any other.
func (s *Stream) Missing(seq uint32, n int, ts time.Time) {
	if s.ended || !s.started || n <= 0 || seqDiff(seq, s.next) != 0 {
		return
	}
	s.gap(uint32(n), ts, false)
	if len(s.ooo) > 0 {
		s.drain(time.Time{})
	}
	s.checkFin(ts)
}

// Ack records an acknowledgment sent by the peer for this direction. An ACK
// past a hole proves the hole was lost by the capture: it is skipped and the
// buffered bytes after it are delivered.
func (s *Stream) Ack(ack uint32, ts time.Time) {
	if !s.started || s.ended {
		return
	}
	if !s.hasAck || seqDiff(ack, s.maxAck) > 0 {
		s.hasAck, s.maxAck = true, ack
	}
	for len(s.ooo) > 0 && seqDiff(s.maxAck, s.ooo[0].seq) >= 0 {
		first := s.ooo[0]
		if d := seqDiff(first.seq, s.next); d > 0 {
			s.gap(uint32(d), first.ts, false)
		}
		s.drain(time.Time{})
	}
	if s.hasFin && seqDiff(s.maxAck, s.finSeq) > 0 && seqDiff(s.finSeq, s.next) > 0 && len(s.ooo) == 0 {
		// The peer acknowledged the FIN: the bytes before it are lost.
		s.gap(uint32(seqDiff(s.finSeq, s.next)), ts, false)
	}
	s.checkFin(ts)
}

// Flush skips every remaining hole and delivers all buffered bytes, as at the
// end of input; bytes acknowledged by the peer but never seen are reported as
// a final gap. It calls End if the FIN was seen; otherwise the stream stays
// open.
func (s *Stream) Flush(ts time.Time) {
	if s.ended {
		return
	}
	for len(s.ooo) > 0 {
		first := s.ooo[0]
		if d := seqDiff(first.seq, s.next); d > 0 {
			s.gap(uint32(d), first.ts, false)
		}
		s.drain(time.Time{})
	}
	// Bytes the peer acknowledged (or that precede the FIN) were lost.
	end, known := s.maxAck, s.hasAck
	if s.hasFin && (!known || seqDiff(end, s.finSeq) > 0) {
		end, known = s.finSeq, true
	}
	if known && seqDiff(end, s.next) > 0 {
		s.gap(uint32(seqDiff(end, s.next)), ts, false)
	}
	s.checkFin(ts)
}

// Reset ends the stream at once (RST): buffered bytes are delivered after
// their holes are skipped, then End is called.
func (s *Stream) Reset(ts time.Time) {
	if s.ended {
		return
	}
	s.Flush(ts)
	if !s.ended {
		s.end(ts)
	}
}

// Release drops buffered bytes without delivering them and returns their
// budget. The stream delivers nothing more.
func (s *Stream) Release() {
	s.release()
	s.ended = true
}

func (s *Stream) release() {
	if s.charged != 0 {
		s.opts.Budget.Release(s.charged)
	}
	s.held, s.charged = 0, 0
	s.ooo = nil
}
