package pipeline

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/orbweaver/orbweaver/agent/packet"
	"github.com/orbweaver/orbweaver/internal/model"
)

// FuzzPipeline drives the whole pipeline with segments of two flows built
// from the input: records of flags, direction+flow, sequence offset (2
// bytes), ack offset (2 bytes), length, then that many payload bytes. It
// checks that nothing panics, that calls are well-formed, and that Close
// releases every buffer and connection.
func FuzzPipeline(f *testing.F) {
	rec := func(flags packet.Flags, dir byte, seq, ack uint16, data string) []byte {
		b := []byte{byte(flags), dir, 0, 0, 0, 0, byte(len(data))}
		binary.BigEndian.PutUint16(b[2:], seq)
		binary.BigEndian.PutUint16(b[4:], ack)
		return append(b, data...)
	}
	cat := func(rs ...[]byte) []byte {
		var out []byte
		for _, r := range rs {
			out = append(out, r...)
		}
		return out
	}
	r1 := "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	s1 := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	f.Add(cat(rec(packet.SYN, 0, 0, 0, ""), rec(packet.SYN|packet.ACK, 1, 0, 1, ""),
		rec(packet.ACK, 0, 1, 1, r1), rec(packet.ACK, 1, 1, uint16(1+len(r1)), s1),
		rec(packet.FIN|packet.ACK, 0, uint16(1+len(r1)), uint16(1+len(s1)), ""), rec(packet.FIN|packet.ACK, 1, uint16(1+len(s1)), uint16(2+len(r1)), "")))
	f.Add(cat(rec(packet.ACK, 1, 100, 50, s1[10:]), rec(packet.ACK, 1, 90, 50, s1), rec(packet.ACK, 0, 50, 200, r1), rec(packet.RST, 1, 0, 0, "")))
	f.Add(cat(rec(packet.ACK, 2, 5, 0, r1), rec(packet.ACK, 3, 9, 0, "HTTP/1.0 200 OK\r\n\r\nbody"), rec(packet.ACK, 2, 40, 0, r1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		evs := fuzzEvents(data)
		var calls []*model.HTTPCall
		// Room for two parsed connections and a few hundred bytes more:
		// buffers and calls contend, and connections get evicted.
		cfg := Config{MaxStreamBufferBytes: 200, MaxTotalBufferBytes: 2*(connCost+mapSlotCost+flowCost) + 600, IdleTimeout: time.Second, MaxConnections: 2}
		p := New(cfg, func(c *model.HTTPCall) { calls = append(calls, c) })
		for _, e := range evs {
			p.Packet(layers.LinkTypeEthernet, e.frame, e.ts)
			if e.tick {
				p.Tick(e.ts)
			}
			if err := p.checkMemory(); err != nil {
				t.Fatal(err)
			}
		}
		p.Close()
		st := p.Stats()
		if st.BufferedBytes != 0 || st.MemoryBytes != 0 || st.ActiveConnections != 0 {
			t.Fatalf("after Close: %+v", st)
		}
		if st.Calls != uint64(len(calls)) {
			t.Fatalf("Calls %d, emitted %d", st.Calls, len(calls))
		}
		for _, c := range calls {
			if c.ParseStatus == "" || c.Method == "" && c.Status == 0 {
				t.Fatalf("bad call %+v", *c)
			}
		}
		// Parsing state created on the first payload (replaying the
		// handshake) must parse exactly as state created with the
		// connection. (Memory is plentiful here: nothing is evicted.)
		var runs [2][]model.HTTPCall
		var stats [2]Stats
		for i, eager := range []bool{false, true} {
			cfg := Config{MaxStreamBufferBytes: 200, IdleTimeout: time.Second}
			p := New(cfg, func(c *model.HTTPCall) { runs[i] = append(runs[i], *c) })
			p.eagerFlows = eager
			for _, e := range evs {
				p.Packet(layers.LinkTypeEthernet, e.frame, e.ts)
				if e.tick {
					p.Tick(e.ts)
				}
			}
			p.Close()
			stats[i] = p.Stats()
			stats[i].MemoryBytes, stats[i].BufferedBytes = 0, 0
		}
		if stats[0] != stats[1] {
			t.Fatalf("stats with lazy flows %+v, eager %+v", stats[0], stats[1])
		}
		if len(runs[0]) != len(runs[1]) {
			t.Fatalf("%d calls with lazy flows, %d eager", len(runs[0]), len(runs[1]))
		}
		for i := range runs[0] {
			if runs[0][i] != runs[1][i] {
				t.Fatalf("call %d with lazy flows %+v, eager %+v", i, runs[0][i], runs[1][i])
			}
		}
	})
}

// fuzzEvent is a frame of FuzzPipeline's input, with its time and whether
// Tick follows it.
type fuzzEvent struct {
	frame []byte
	ts    time.Time
	tick  bool
}

// fuzzEvents decodes FuzzPipeline's input (see there).
func fuzzEvents(data []byte) []fuzzEvent {
	flows := [2][2]netip.AddrPort{
		{netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("10.0.0.2:80")},
		{netip.MustParseAddrPort("10.0.0.3:40001"), netip.MustParseAddrPort("10.0.0.2:80")},
	}
	var evs []fuzzEvent
	ts := base
	for len(data) >= 7 {
		flags, dir := packet.Flags(data[0]), data[1]
		seq, ack := uint32(binary.BigEndian.Uint16(data[2:])), uint32(binary.BigEndian.Uint16(data[4:]))
		n := min(int(data[6]), len(data)-7)
		payload := data[7 : 7+n]
		data = data[7+n:]
		fl := flows[dir>>1&1]
		src, dst := fl[0], fl[1]
		if dir&1 != 0 {
			src, dst = dst, src
			seq += 1 << 20 // the server's sequence space
		} else {
			ack += 1 << 20
		}
		ts = ts.Add(time.Duration(dir>>2) * 100 * time.Millisecond)
		evs = append(evs, fuzzEvent{ethFrame(src, dst, seq, ack, flags, payload), ts, dir&0x80 != 0})
	}
	return evs
}
