package reassembly

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/orbweaver/orbweaver/agent/membudget"
)

// recorder is a Sink that writes events as text: data as is, "[gap N]",
// "[end]".
type recorder struct {
	b strings.Builder
}

func (r *recorder) Data(b []byte, _ time.Time) { r.b.Write(b) }
func (r *recorder) Gap(n int, _ time.Time)     { fmt.Fprintf(&r.b, "[gap %d]", n) }
func (r *recorder) End(_ time.Time)            { r.b.WriteString("[end]") }

// op is one input to a Stream.
type op struct {
	seq      uint32
	syn, fin bool
	data     string
	ack      uint32 // when kind == "ack"
	kind     string // "" segment, "ack", "flush", "reset"
}

func seg(seq uint32, data string) op { return op{seq: seq, data: data} }

func TestStream(t *testing.T) {
	const isn = 1000
	tests := []struct {
		name      string
		maxBuf    int
		ops       []op
		want      string
		ctr       map[string]uint64
		buffered  int
		wantEnded bool
	}{
		{name: "in order with SYN and FIN",
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "abc"), seg(isn+4, "def"), {seq: isn + 7, fin: true}},
			want: "abcdef[end]", wantEnded: true},
		{name: "out of order is reordered",
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "abc"), seg(isn+7, "ghi"), seg(isn+4, "def")},
			want: "abcdefghi", ctr: map[string]uint64{"OutOfOrder": 1}},
		{name: "retransmission delivered once",
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "abc"), seg(isn+1, "abc"), seg(isn+4, "d")},
			want: "abcd", ctr: map[string]uint64{"Retransmissions": 1, "RetransmittedBytes": 3}},
		{name: "overlap trimmed",
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "abcd"), seg(isn+3, "cdef")},
			want: "abcdef", ctr: map[string]uint64{"Overlaps": 1, "RetransmittedBytes": 2}},
		{name: "overlapping buffered segments",
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "a"), seg(isn+5, "efg"), seg(isn+4, "defgh"), seg(isn+2, "bc")},
			want: "abcdefgh", ctr: map[string]uint64{"OutOfOrder": 2, "Retransmissions": 1}},
		{name: "mid-stream join without SYN",
			ops:  []op{seg(5000, "GET"), seg(5003, " /")},
			want: "GET /"},
		{name: "sequence wraparound",
			ops:  []op{{seq: 0xFFFFFFFE, syn: true}, seg(0xFFFFFFFF, "ab"), seg(1, "cd"), {seq: 3, fin: true}},
			want: "abcd[end]", wantEnded: true},
		{name: "ACK past a hole proves the gap",
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "abc"), seg(isn+10, "xyz"), {kind: "ack", ack: isn + 13}},
			want: "abc[gap 6]xyz", ctr: map[string]uint64{"Gaps": 1, "GapBytes": 6, "CapDroppedBytes": 0}},
		{name: "ACK seen before the data after a hole",
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "abc"), {kind: "ack", ack: isn + 20}, seg(isn+10, "xyz")},
			want: "abc[gap 6]xyz", ctr: map[string]uint64{"OutOfOrder": 0, "GapBytes": 6}},
		{name: "ACK not past the hole keeps waiting",
			ops:      []op{{seq: isn, syn: true}, seg(isn+1, "abc"), seg(isn+10, "xyz"), {kind: "ack", ack: isn + 4}},
			want:     "abc",
			buffered: 3},
		{name: "buffer cap forces the gap", maxBuf: 4,
			ops:      []op{{seq: isn, syn: true}, seg(isn+1, "a"), seg(isn+10, "xyz"), seg(isn+20, "pq")},
			want:     "a[gap 8]xyz",
			ctr:      map[string]uint64{"CapDroppedBytes": 8, "GapBytes": 8},
			buffered: 2},
		{name: "segment larger than the cap is delivered after a gap", maxBuf: 2,
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "a"), seg(isn+10, "xyz")},
			want: "a[gap 8]xyz", ctr: map[string]uint64{"CapDroppedBytes": 8}},
		{name: "flush skips holes and ends after FIN",
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "a"), seg(isn+5, "e"), {seq: isn + 8, fin: true}, {kind: "flush"}},
			want: "a[gap 3]e[gap 2][end]", wantEnded: true},
		{name: "flush reports an acknowledged lost tail",
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "abc"), {kind: "ack", ack: isn + 9}, {kind: "flush"}},
			want: "abc[gap 5]"},
		{name: "bytes cut by the snap length are a gap at once",
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "ab"), {kind: "missing", seq: isn + 3, ack: 4}, seg(isn+7, "gh")},
			want: "ab[gap 4]gh", ctr: map[string]uint64{"OutOfOrder": 0}},
		{name: "FIN before the last data",
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "abc"), {seq: isn + 7, fin: true}, seg(isn+4, "def")},
			want: "abcdef[end]", wantEnded: true},
		{name: "FIN acknowledged with bytes missing",
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "abc"), {seq: isn + 7, fin: true}, {kind: "ack", ack: isn + 8}},
			want: "abc[gap 3][end]", wantEnded: true},
		{name: "reset ends the stream",
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "abc"), seg(isn+6, "f"), {kind: "reset"}, seg(isn+4, "de")},
			want: "abc[gap 2]f[end]", wantEnded: true},
		{name: "segment far beyond any window is ignored",
			ops:  []op{{seq: isn, syn: true}, seg(isn+1, "a"), seg(isn+2+(1<<30)+1, "zz"), seg(isn+2, "b")},
			want: "ab", ctr: map[string]uint64{"OutOfWindow": 1, "OutOfOrder": 0}},
		{name: "data after FIN is ignored",
			ops:  []op{{seq: isn, syn: true}, {seq: isn + 1, fin: true, data: "ab"}, seg(isn+3, "zz")},
			want: "ab[end]", wantEnded: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ctr Counters
			maxBuf := tt.maxBuf
			if maxBuf == 0 {
				maxBuf = 1 << 20
			}
			lim := membudget.NewLimit(1 << 30)
			opts := &Options{MaxBufferBytes: maxBuf, Budget: lim, Counters: &ctr}
			var r recorder
			var s Stream
			s.Init(opts, &r)
			for _, o := range tt.ops {
				switch o.kind {
				case "ack":
					s.Ack(o.ack, time.Time{})
				case "flush":
					s.Flush(time.Time{})
				case "reset":
					s.Reset(time.Time{})
				case "missing":
					s.Missing(o.seq, int(o.ack), time.Time{})
				default:
					data := []byte(o.data)
					s.Segment(o.seq, o.syn, o.fin, data, time.Time{})
					clear(data) // the caller's buffer is reused
				}
			}
			if got := r.b.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			counts := map[string]uint64{
				"Retransmissions": ctr.Retransmissions.Load(), "RetransmittedBytes": ctr.RetransmittedBytes.Load(),
				"Overlaps": ctr.Overlaps.Load(), "OutOfOrder": ctr.OutOfOrder.Load(), "Gaps": ctr.Gaps.Load(),
				"GapBytes": ctr.GapBytes.Load(), "CapDroppedBytes": ctr.CapDroppedBytes.Load(), "OutOfWindow": ctr.OutOfWindow.Load(),
			}
			for k, v := range tt.ctr {
				if counts[k] != v {
					t.Errorf("%s = %d, want %d", k, counts[k], v)
				}
			}
			if s.Buffered() != tt.buffered || lim.Used() != s.Memory() || (tt.buffered == 0) != (s.Memory() == 0) {
				t.Errorf("buffered %d (memory %d, budget %d), want %d", s.Buffered(), s.Memory(), lim.Used(), tt.buffered)
			}
			if s.Ended() != tt.wantEnded {
				t.Errorf("ended %v, want %v", s.Ended(), tt.wantEnded)
			}
		})
	}
}

// TestBudgetShared: the budget applies across streams and is charged by
// capacity: the copies and the slice holding them.
func TestBudgetShared(t *testing.T) {
	var ctr Counters
	// One 3-byte segment costs its copy (8 bytes, the smallest size class)
	// and a slice of two segments.
	one := 8 + 2*segmentSize
	lim := membudget.NewLimit(one + 5)
	opts := &Options{MaxBufferBytes: 100, Budget: lim, Counters: &ctr}
	var r1, r2 recorder
	var s1, s2 Stream
	s1.Init(opts, &r1)
	s2.Init(opts, &r2)
	s1.Segment(0, false, false, []byte("a"), time.Time{})
	s1.Segment(10, false, false, []byte("bcd"), time.Time{}) // buffered
	s2.Segment(0, false, false, []byte("a"), time.Time{})
	s2.Segment(10, false, false, []byte("xyz"), time.Time{}) // no room: skips to it
	if r2.b.String() != "a[gap 9]xyz" || r1.b.String() != "a" {
		t.Fatalf("got %q and %q", r1.b.String(), r2.b.String())
	}
	if lim.Used() != one || s1.Memory() != one || s2.Memory() != 0 {
		t.Fatalf("budget used %d, memory %d and %d, want %d", lim.Used(), s1.Memory(), s2.Memory(), one)
	}
	if ctr.CapDroppedBytes.Load() != 9 {
		t.Errorf("CapDroppedBytes %d", ctr.CapDroppedBytes.Load())
	}
	s1.Release()
	if lim.Used() != 0 || s1.Memory() != 0 {
		t.Fatalf("budget used %d after release", lim.Used())
	}
}

// TestBudgetRefusedSkipsOwnHole: when the budget refuses a later segment,
// the stream skips its own oldest hole to make room, delivers what became
// contiguous, and buffers the new segment in the memory freed.
func TestBudgetRefusedSkipsOwnHole(t *testing.T) {
	var ctr Counters
	one := 8 + 2*segmentSize
	lim := membudget.NewLimit(one)
	opts := &Options{MaxBufferBytes: 100, Budget: lim, Counters: &ctr}
	var r recorder
	var s Stream
	s.Init(opts, &r)
	s.Segment(0, false, false, []byte("a"), time.Time{})
	s.Segment(10, false, false, []byte("bcd"), time.Time{}) // buffered: the budget is full
	s.Segment(20, false, false, []byte("xyz"), time.Time{}) // the hole at 1 is skipped for it
	s.Flush(time.Time{})
	if got := r.b.String(); got != "a[gap 9]bcd[gap 7]xyz" {
		t.Fatalf("got %q", got)
	}
	if ctr.CapDroppedBytes.Load() != 9 || ctr.GapBytes.Load() != 16 || lim.Used() != 0 {
		t.Errorf("CapDroppedBytes %d, GapBytes %d, budget %d", ctr.CapDroppedBytes.Load(), ctr.GapBytes.Load(), lim.Used())
	}
}

// TestInOrderNoAlloc: the in-order path allocates nothing.
func TestInOrderNoAlloc(t *testing.T) {
	var ctr Counters
	opts := &Options{MaxBufferBytes: 100, Budget: membudget.NewLimit(100), Counters: &ctr}
	var s Stream
	s.Init(opts, discard{})
	payload := make([]byte, 100)
	seq := uint32(1)
	s.Segment(0, true, false, nil, time.Time{})
	allocs := testing.AllocsPerRun(1000, func() {
		s.Segment(seq, false, false, payload, time.Time{})
		s.Ack(seq, time.Time{})
		seq += 100
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per in-order segment", allocs)
	}
}

type discard struct{}

func (discard) Data([]byte, time.Time) {}
func (discard) Gap(int, time.Time)     {}
func (discard) End(time.Time)          {}
