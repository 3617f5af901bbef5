package pcapgen

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Snaplen is the snapshot length written in the pcap file header.
const Snaplen = 262144

// frame is one captured Ethernet frame waiting to be written.
type frame struct {
	ts   int64  // Unix nanoseconds
	seq  uint64 // emission order, breaks timestamp ties deterministically
	data []byte
}

// Writer writes Ethernet frames to a classic pcap file with nanosecond
// timestamps (LinkTypeEthernet, snaplen 262144).
//
// Connections created with NewConn hand their frames to the Writer, which
// keeps them in a min-heap ordered by timestamp. Flush writes every pending
// frame in timestamp order, which suits small files built connection by
// connection. For large files, FlushUntil (or Interleave, which calls it)
// writes only the frames that no connection can precede any more, so memory
// stays bounded.
//
// A Writer is not safe for concurrent use.
type Writer struct {
	bw      *bufio.Writer
	pw      *pcapgo.Writer
	pending []frame // min-heap by (ts, seq)
	free    [][]byte
	nextSeq uint64
	firstTS int64
	lastTS  int64
	err     error

	packets int64
	bytes   int64
}

// NewWriter writes the pcap file header to w and returns a Writer. Frames
// are buffered; call Flush to write them.
func NewWriter(w io.Writer) (*Writer, error) {
	bw := bufio.NewWriterSize(w, 1<<16)
	pw := pcapgo.NewWriterNanos(bw)
	if err := pw.WriteFileHeader(Snaplen, layers.LinkTypeEthernet); err != nil {
		return nil, fmt.Errorf("write pcap header: %w", err)
	}
	return &Writer{bw: bw, pw: pw, lastTS: math.MinInt64}, nil
}

// Packets returns the number of frames written so far (not counting pending
// ones).
func (w *Writer) Packets() int64 { return w.packets }

// Bytes returns the total length of the frames written so far.
func (w *Writer) Bytes() int64 { return w.bytes }

// Pending returns the number of frames buffered and not yet written.
func (w *Writer) Pending() int { return len(w.pending) }

// Flush writes all pending frames in timestamp order and flushes the
// underlying writer. It returns the first error met by the Writer or its
// connections.
func (w *Writer) Flush() error {
	if err := w.FlushUntil(time.Unix(0, math.MaxInt64)); err != nil {
		return err
	}
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("flush pcap: %w", err)
	}
	return nil
}

// FlushUntil writes, in timestamp order, the pending frames whose timestamp
// is not after t. The caller promises that no frame earlier than t will be
// produced afterwards; a frame that breaks this promise makes the Writer fail
// with an error instead of writing frames out of order.
func (w *Writer) FlushUntil(t time.Time) error {
	if w.err != nil {
		return w.err
	}
	limit := t.UnixNano()
	for len(w.pending) > 0 && w.pending[0].ts <= limit {
		f := w.pop()
		if f.ts < w.lastTS {
			w.err = fmt.Errorf("write frame: timestamp %s precedes already written frame at %s",
				time.Unix(0, f.ts).UTC().Format(time.RFC3339Nano), time.Unix(0, w.lastTS).UTC().Format(time.RFC3339Nano))
			return w.err
		}
		if w.packets == 0 {
			w.firstTS = f.ts
		}
		w.lastTS = f.ts
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, f.ts), CaptureLength: len(f.data), Length: len(f.data)}
		if err := w.pw.WritePacket(ci, f.data); err != nil {
			w.err = fmt.Errorf("write frame: %w", err)
			return w.err
		}
		w.packets++
		w.bytes += int64(len(f.data))
		w.free = append(w.free, f.data[:0])
	}
	return nil
}

// fail records the first error seen; it is reported by Flush.
func (w *Writer) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

// emit serialises s with timestamp ts and queues it.
func (w *Writer) emit(ts int64, s *segment) {
	var buf []byte
	if n := len(w.free); n > 0 {
		buf = w.free[n-1]
		w.free = w.free[:n-1]
	}
	buf = appendFrame(buf, s)
	w.push(frame{ts: ts, seq: w.nextSeq, data: buf})
	w.nextSeq++
}

func (w *Writer) less(i, j int) bool {
	a, b := &w.pending[i], &w.pending[j]
	if a.ts != b.ts {
		return a.ts < b.ts
	}
	return a.seq < b.seq
}

func (w *Writer) push(f frame) {
	w.pending = append(w.pending, f)
	i := len(w.pending) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !w.less(i, p) {
			break
		}
		w.pending[i], w.pending[p] = w.pending[p], w.pending[i]
		i = p
	}
}

func (w *Writer) pop() frame {
	h := w.pending
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h[n] = frame{}
	w.pending = h[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && w.less(r, l) {
			m = r
		}
		if !w.less(m, i) {
			break
		}
		w.pending[i], w.pending[m] = w.pending[m], w.pending[i]
		i = m
	}
	return top
}

// Interleave drives several connections concurrently in simulated time. It
// repeatedly calls step with the connection whose clock is earliest, until
// step has returned false for every connection, and writes frames as soon as
// no connection can precede them any more. step typically performs one
// exchange (and perhaps Advance for think time) and returns whether the
// connection has more to do; it should Close or Reset the connection before
// returning false if the connection is meant to end.
//
// Interleave does not flush the underlying io.Writer; call Flush at the end.
func (w *Writer) Interleave(conns []*Conn, step func(c *Conn) bool) error {
	active := make([]*Conn, 0, len(conns))
	active = append(active, conns...)
	for len(active) > 0 {
		// Linear scan: Interleave is meant for tens to hundreds of
		// connections; GenerateHTTP uses its own heap for volume.
		best := 0
		for i, c := range active {
			if c.now < active[best].now {
				best = i
			}
		}
		c := active[best]
		if !step(c) {
			active[best] = active[len(active)-1]
			active = active[:len(active)-1]
		}
		if len(active) == 0 {
			break
		}
		low := active[0].now
		for _, c := range active[1:] {
			low = min(low, c.now)
		}
		if err := w.FlushUntil(time.Unix(0, low)); err != nil {
			return err
		}
	}
	if w.err != nil {
		return w.err
	}
	return nil
}

// errClosed is reported when data is sent on a closed connection.
var errClosed = errors.New("pcapgen: send on closed connection")
