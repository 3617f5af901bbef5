package pipeline

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/orbweaver/orbweaver/agent/packet"
	"github.com/orbweaver/orbweaver/internal/model"
)

// checkMemory verifies the memory budget's books: the charge equals the sum
// of what every connection, its parsing state and its buffers hold, and
// stays within the budget.
func (p *Pipeline) checkMemory() error {
	var conns, flows, ooo, http int64
	for _, c := range p.conns {
		conns += connCost
		if f := c.flow; f != nil {
			flows += flowCost
			ooo += f.streams[0].Memory() + f.streams[1].Memory()
			http += f.http.Memory()
		}
	}
	want := conns + flows + ooo + http + int64(p.mapHWM)*mapSlotCost
	switch {
	case p.mem.used != want:
		return fmt.Errorf("memory charged %d, held %d (conns %d, flows %d, out of order %d, http %d, table %d)",
			p.mem.used, want, conns, flows, ooo, http, int64(p.mapHWM)*mapSlotCost)
	case p.oooMem.used != ooo || p.httpMem.used != http:
		return fmt.Errorf("accounts: out of order %d (held %d), http %d (held %d)", p.oooMem.used, ooo, p.httpMem.used, http)
	case p.mem.used > p.mem.max:
		return fmt.Errorf("memory charged %d over the budget %d", p.mem.used, p.mem.max)
	case p.mapHWM < len(p.conns):
		return fmt.Errorf("table charged for %d entries, holds %d", p.mapHWM, len(p.conns))
	}
	return nil
}

// hostileConn returns the frames of connection i of the hostile load (as in
// the benchmark's section 6): SYN, SYN-ACK, a request header block that
// never ends, and a segment beyond a 500-byte hole.
func hostileConn(i int) [][]byte {
	cli := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(1 + i>>16), byte(i >> 8), byte(i)}), uint16(10000+i%50000))
	srv := netip.MustParseAddrPort("10.255.0.1:80")
	isn := uint32(i) * 7919
	req := fmt.Sprintf("GET /hostile/%08d HTTP/1.1\r\nHost: victim\r\nX-Pad: %s", i, strings.Repeat("a", 900))
	return [][]byte{
		ethFrame(cli, srv, isn, 0, packet.SYN, nil),
		ethFrame(srv, cli, 5000, isn+1, packet.SYN|packet.ACK, nil),
		ethFrame(cli, srv, isn+1, 5001, packet.ACK|packet.PSH, []byte(req)),
		ethFrame(cli, srv, isn+1+uint32(len(req))+500, 5001, packet.ACK|packet.PSH, make([]byte, 1000)),
	}
}

// hostileHeld is what a hostile connection holds undelivered: its partial
// header block and its early segment.
var hostileHeld = uint64(len(hostileConn(0)[2]) - 54 + 1000)

// TestPipelineHalfOpenCheap: connections that only shook hands hold no
// parsing state: each costs its struct and a table slot.
func TestPipelineHalfOpenCheap(t *testing.T) {
	const n = 1000
	p := New(DefaultConfig(), func(*model.HTTPCall) {})
	for i := range n {
		for _, f := range hostileConn(i)[:2] {
			p.Packet(layers.LinkTypeEthernet, f, base)
		}
	}
	st := p.Stats()
	if want := uint64(n * (connCost + mapSlotCost)); st.MemoryBytes != want || st.BufferedBytes != 0 || st.ActiveConnections != n {
		t.Fatalf("memory %d (want %d), buffered %d, active %d", st.MemoryBytes, want, st.BufferedBytes, st.ActiveConnections)
	}
	for _, c := range p.conns {
		if c.flow != nil {
			t.Fatal("a connection without payload has parsing state")
		}
	}
	if err := p.checkMemory(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if st := p.Stats(); st.MemoryBytes != 0 {
		t.Fatalf("memory %d after Close", st.MemoryBytes)
	}
}

// TestPipelineHostileBudget: many half-open streams that each hold an
// unfinished header block and an early segment, under a small budget. The
// charge never exceeds the budget, the least recently seen connections are
// evicted (counted, with the bytes they held), the budget is used to the
// full, and the connections still tracked are the most recent ones.
func TestPipelineHostileBudget(t *testing.T) {
	const n = 2000
	cfg := DefaultConfig()
	cfg.MaxTotalBufferBytes = 1 << 20
	p := New(cfg, func(*model.HTTPCall) {})
	for i := range n {
		for _, f := range hostileConn(i) {
			p.Packet(layers.LinkTypeEthernet, f, base)
			if err := p.checkMemory(); err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
		}
	}
	// What one hostile connection costs, measured alone.
	one := New(DefaultConfig(), func(*model.HTTPCall) {})
	for _, f := range hostileConn(0) {
		one.Packet(layers.LinkTypeEthernet, f, base)
	}
	per := int64(one.Stats().MemoryBytes) - mapSlotCost

	st := p.Stats()
	active := int64(st.ActiveConnections)
	if st.EvictedConnections+st.ActiveConnections != n || st.ConnectionsRejected != 0 {
		t.Fatalf("evicted %d + active %d != %d (rejected %d)", st.EvictedConnections, st.ActiveConnections, n, st.ConnectionsRejected)
	}
	if st.EvictedBytes != st.EvictedConnections*hostileHeld || st.CapDroppedBytes != 0 || st.GapBytes != 0 {
		t.Errorf("evicted bytes %d, want %d; cap dropped %d, gap bytes %d", st.EvictedBytes, st.EvictedConnections*hostileHeld, st.CapDroppedBytes, st.GapBytes)
	}
	// Full: the tracked connections and the table leave no room for one more.
	table := int64(p.mapHWM) * mapSlotCost
	if used := int64(st.MemoryBytes); used != active*per+table || used+per <= cfg.MaxTotalBufferBytes {
		t.Errorf("memory %d for %d connections of %d and a table of %d; budget %d", used, active, per, table, cfg.MaxTotalBufferBytes)
	}
	for i := range n {
		_, tracked := p.conns[keyOf(hostileConn(i)[0])]
		if tracked != (int64(i) >= n-active) {
			t.Fatalf("connection %d tracked %v; %d most recent expected", i, tracked, active)
		}
	}
	p.Close()
	if st := p.Stats(); st.MemoryBytes != 0 || st.BufferedBytes != 0 {
		t.Fatalf("after Close: memory %d, buffered %d", st.MemoryBytes, st.BufferedBytes)
	}
}

// keyOf returns the flow key of a frame.
func keyOf(frame []byte) flowKey {
	var seg packet.Segment
	packet.Decode(layers.LinkTypeEthernet, frame, &seg)
	if string(seg.Src[:]) < string(seg.Dst[:]) || seg.Src == seg.Dst && seg.SrcPort <= seg.DstPort {
		return flowKey{a: seg.Src, b: seg.Dst, pa: seg.SrcPort, pb: seg.DstPort}
	}
	return flowKey{a: seg.Dst, b: seg.Src, pa: seg.DstPort, pb: seg.SrcPort}
}

// TestPipelineHealthyUnderFlood: a keep-alive connection that keeps talking
// while hostile connections exhaust the budget is never evicted: all its
// calls are parsed.
func TestPipelineHealthyUnderFlood(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxTotalBufferBytes = 256 << 10
	var calls []*model.HTTPCall
	p := New(cfg, func(c *model.HTTPCall) { calls = append(calls, c) })
	h := newConv("10.9.0.1:40000", "10.9.0.2:8080", 1, 2).handshake()
	feed := func(frames [][]byte) {
		for _, f := range frames {
			p.Packet(layers.LinkTypeEthernet, f, base)
		}
	}
	feed(h.frames)
	const rounds = 100
	for r := range rounds {
		h.frames = nil
		h.req(req1[:20]) // header blocks split over segments: buffered
		for i := range 20 {
			feed(hostileConn(r*20 + i))
		}
		h.req(req1[20:])
		h.resp(resp1)
		h.ack(true)
		feed(h.frames)
	}
	p.Close()
	st := p.Stats()
	if len(calls) != rounds || strings.Count(statuses(calls), "GET /one ok;") != rounds {
		t.Fatalf("%d calls: %s", len(calls), statuses(calls)[:min(200, len(statuses(calls)))])
	}
	if st.EvictedConnections == 0 || st.EvictedConnections > 20*rounds {
		t.Errorf("evicted %d", st.EvictedConnections)
	}
}

// TestPipelineEndlessChunked: a chunked response that never ends, with body
// capture on, holds a bounded amount of memory however long it runs; its
// bytes are counted and the connection stays tracked.
func TestPipelineEndlessChunked(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Parsing.CaptureBodies, cfg.Parsing.BodyMaxBytes = true, 4096
	var calls []*model.HTTPCall
	p := New(cfg, func(c *model.HTTPCall) { calls = append(calls, c) })
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 1, 2).handshake()
	c.req("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	c.resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
	for _, f := range c.frames {
		p.Packet(layers.LinkTypeEthernet, f, base)
	}
	// 1448-byte segments of 1000-byte chunks: chunk-size lines are split
	// across segments.
	chunk := fmt.Sprintf("%x\r\n%s\r\n", 1000, strings.Repeat("d", 1000))
	stream := strings.Repeat(chunk, 1448)
	var sent int64
	var peak, afterFirst uint64
	for round := range 64 {
		for off := 0; off < len(stream); off += 1448 {
			c.frames = nil
			c.resp(stream[off:min(off+1448, len(stream))])
			p.Packet(layers.LinkTypeEthernet, c.frames[0], base.Add(time.Duration(round)*time.Second))
			peak = max(peak, p.Stats().MemoryBytes)
		}
		sent += int64(1448 * 1000)
		if round == 0 {
			afterFirst = peak
		}
	}
	st := p.Stats()
	if peak != afterFirst || st.ActiveConnections != 1 || st.EvictedConnections != 0 || len(calls) != 0 {
		t.Fatalf("peak memory %d (after the first 2 MiB: %d), active %d, evicted %d, calls %d", peak, afterFirst, st.ActiveConnections, st.EvictedConnections, len(calls))
	}
	if err := p.checkMemory(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if len(calls) != 1 || calls[0].ResponseBodySize != sent || !calls[0].ResponseBodyTruncated || calls[0].ParseStatus != model.StatusTruncated {
		t.Fatalf("calls %+v", calls)
	}
}

// TestMemoryChargesCoverHeap: what the budget is charged for a connection
// (half-open, and with parsing state and buffers) is at least what the Go
// heap holds for it.
func TestMemoryChargesCoverHeap(t *testing.T) {
	const n = 20000
	for _, tc := range []struct {
		name   string
		frames int // of each hostile connection
	}{
		{"handshake only", 2},
		{"partial header and early segment", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := make([][][]byte, n)
			for i := range in {
				in[i] = hostileConn(i)[:tc.frames]
			}
			p := New(DefaultConfig(), func(*model.HTTPCall) {})
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			for _, fs := range in {
				for _, f := range fs {
					p.Packet(layers.LinkTypeEthernet, f, base)
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&m1)
			heap := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
			charged := int64(p.Stats().MemoryBytes)
			t.Logf("%d connections: heap %d bytes (%d each), charged %d (%d each)", n, heap, heap/n, charged, charged/n)
			if p.Stats().EvictedConnections != 0 || charged < heap {
				t.Errorf("charged %d < heap %d (evicted %d)", charged, heap, p.Stats().EvictedConnections)
			}
			runtime.KeepAlive(in)
			runtime.KeepAlive(p)
		})
	}
}
