package reassembly

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/orbweaver/orbweaver/agent/membudget"
)

// checker is a Sink that verifies the delivered stream: the byte at stream
// offset i must be byte(i*7+3) (the fuzz input's segments carry that
// pattern), gaps advance the offset, and nothing follows End.
type checker struct {
	t     *testing.T
	off   int64
	ended bool
}

func pattern(off int64) byte { return byte(off*7 + 3) }

func (c *checker) Data(b []byte, _ time.Time) {
	if c.ended {
		c.t.Fatalf("data after end")
	}
	for i, x := range b {
		if x != pattern(c.off+int64(i)) {
			c.t.Fatalf("byte at offset %d is %d, want %d", c.off+int64(i), x, pattern(c.off+int64(i)))
		}
	}
	c.off += int64(len(b))
}

func (c *checker) Gap(n int, _ time.Time) {
	if c.ended || n <= 0 {
		c.t.Fatalf("bad gap %d (ended %v)", n, c.ended)
	}
	c.off += int64(n)
}

func (c *checker) End(time.Time) {
	if c.ended {
		c.t.Fatalf("end twice")
	}
	c.ended = true
}

// FuzzStream feeds arbitrary segment sequences and checks that every
// delivered byte is the byte sent at its stream offset, that caps hold and
// that the budget is returned. Input: a 4-byte initial sequence number, then
// 4-byte records: op, offset from the ISN (2 bytes), length. op&7: 0-3 a
// segment of that length (op&8: with FIN), 4 an ACK at the offset, 5 Flush,
// 6 Reset, 7 a SYN.
func FuzzStream(f *testing.F) {
	f.Add([]byte{0xFF, 0xFF, 0xFF, 0xF0, 7, 0, 0, 0, 0, 0, 1, 10, 0, 0, 20, 10, 0, 0, 11, 9, 4, 0, 40, 0, 5, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 50, 0, 0, 100, 50, 0, 0, 200, 200, 1, 0, 250, 10, 6, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4 {
			return
		}
		isn := binary.BigEndian.Uint32(data)
		data = data[4:]
		var ctr Counters
		lim := membudget.NewLimit(1000)
		opts := &Options{MaxBufferBytes: 300, Budget: lim, Counters: &ctr}
		chk := &checker{t: t}
		var s Stream
		s.Init(opts, chk)
		// Stream offset 0 is at isn+1 when a SYN comes first, else at the
		// first data segment; a segment at isn+off carries the pattern for
		// stream offset off-baseOff.
		var baseOff int64
		first := true
		buf := make([]byte, 256)
		for ; len(data) >= 4; data = data[4:] {
			op, off, n := data[0], int64(binary.BigEndian.Uint16(data[1:3])), int(data[3])
			switch op & 7 {
			case 4:
				s.Ack(isn+uint32(off), time.Time{})
			case 5:
				s.Flush(time.Time{})
			case 6:
				s.Reset(time.Time{})
			case 7:
				if first {
					baseOff, first = 1, false
				}
				s.Segment(isn, true, false, nil, time.Time{})
			default:
				if first && (n > 0 || op&8 != 0) {
					baseOff, first = off, false
				}
				p := buf[:n]
				for i := range p {
					p[i] = pattern(off - baseOff + int64(i))
				}
				s.Segment(isn+uint32(off), false, op&8 != 0, p, time.Time{})
			}
			if s.Buffered() > opts.MaxBufferBytes || lim.Used() != s.Memory() || lim.Used() > lim.Max() {
				t.Fatalf("buffered %d, memory %d, budget %d", s.Buffered(), s.Memory(), lim.Used())
			}
		}
		s.Flush(time.Time{})
		s.Release()
		if lim.Used() != 0 || s.Memory() != 0 {
			t.Fatalf("budget leak %d", lim.Used())
		}
	})
}
