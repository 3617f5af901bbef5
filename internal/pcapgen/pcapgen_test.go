package pcapgen

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var testStart = time.Date(2026, time.March, 1, 8, 0, 0, 0, time.UTC)

// TestChecksums recomputes IPv4 and TCP checksums with gopacket and
// compares them with the generated frames.
func TestChecksums(t *testing.T) {
	tests := []struct {
		name           string
		client, server string
		payload        int
	}{
		{"ipv4 empty", "10.0.0.1:40000", "10.0.0.2:80", 0},
		{"ipv4 odd", "10.0.0.1:40000", "10.0.0.2:80", 1},
		{"ipv4 full", "192.168.255.254:65535", "172.16.0.1:8080", 1460},
		{"ipv4 multi", "127.0.0.1:51234", "127.0.0.1:8080", 5001},
		{"ipv6 odd", "[fd00::1]:40000", "[fd00::2]:8080", 333},
		{"ipv6 multi", "[2001:db8::ffff:1]:40000", "[2001:db8::1]:443", 4444},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf)
			if err != nil {
				t.Fatal(err)
			}
			c := w.NewConn(netip.MustParseAddrPort(tt.client), netip.MustParseAddrPort(tt.server), testStart, ConnOptions{})
			payload := make([]byte, tt.payload)
			for i := range payload {
				payload[i] = byte(i*31 + 7)
			}
			c.Client(payload)
			c.Server(payload)
			c.Reset(false)
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			pkts, err := readPcap(t, buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range pkts {
				gp := gopacket.NewPacket(p.raw, layers.LayerTypeEthernet, gopacket.Default)
				tcp := gp.Layer(layers.LayerTypeTCP).(*layers.TCP)
				want := tcp.Checksum
				if err := tcp.SetNetworkLayerForChecksum(gp.NetworkLayer()); err != nil {
					t.Fatal(err)
				}
				sb := gopacket.NewSerializeBuffer()
				if err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{ComputeChecksums: true}, tcp, gopacket.Payload(tcp.Payload)); err != nil {
					t.Fatal(err)
				}
				if got := binary.BigEndian.Uint16(sb.Bytes()[16:18]); got != want {
					t.Errorf("frame %d: TCP checksum %#04x, gopacket computes %#04x", i+1, want, got)
				}
				if ip4, ok := gp.NetworkLayer().(*layers.IPv4); ok {
					want := ip4.Checksum
					sb := gopacket.NewSerializeBuffer()
					if err := ip4.SerializeTo(sb, gopacket.SerializeOptions{ComputeChecksums: true}); err != nil {
						t.Fatal(err)
					}
					if got := binary.BigEndian.Uint16(sb.Bytes()[10:12]); got != want {
						t.Errorf("frame %d: IPv4 checksum %#04x, gopacket computes %#04x", i+1, want, got)
					}
				}
			}
		})
	}
}

// TestConnStreams checks handshake, sequence/ack numbers, time order and
// that the reassembled streams parse with net/http into the truth.
func TestConnStreams(t *testing.T) {
	tests := []struct {
		name        string
		client      string
		opts        ConnOptions
		wantReorder bool
		wantRetrans bool
	}{
		{name: "clean", client: "10.0.0.1:40000"},
		{name: "small mss", client: "10.0.0.1:40000", opts: ConnOptions{MSS: 100, RTT: time.Millisecond}},
		{name: "ipv6", client: "[fd00::1]:40000"},
		{name: "no handshake", client: "10.0.0.1:40000", opts: ConnOptions{NoHandshake: true}},
		{name: "rand without probabilities", client: "10.0.0.1:40000", opts: ConnOptions{Rand: rand.New(rand.NewPCG(1, 1))}},
		{name: "impaired", client: "10.0.0.1:40000", wantReorder: true, wantRetrans: true,
			opts: ConnOptions{MSS: 300, Rand: rand.New(rand.NewPCG(7, 7)), ReorderProb: 0.3, RetransmitProb: 0.3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := netip.MustParseAddrPort(tt.client)
			server := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.2"), 8080)
			if client.Addr().Is6() {
				server = netip.MustParseAddrPort("[fd00::2]:8080")
			}
			var buf bytes.Buffer
			w, err := NewWriter(&buf)
			if err != nil {
				t.Fatal(err)
			}
			c := w.NewConn(client, server, testStart, tt.opts)
			exs := []Exchange{
				{Path: "/a", Query: "x=1", RespBody: 5000},
				{Method: http.MethodPost, Path: "/b", ReqBody: 3000, Status: 201, RespBody: 10},
				{Method: http.MethodDelete, Path: "/c", Status: 204, RespBody: 99},
				{Method: http.MethodHead, Path: "/d", RespBody: 1234},
				{Method: http.MethodPut, Path: "/e", ReqBody: 2000, ReqChunked: true, RespBody: 7777, Chunked: true, ChunkSize: 500},
				{Path: "/f", Status: 500, TraceParent: true, Headers: []Header{{"Authorization", "Bearer x"}}},
			}
			var truth []Truth
			for _, ex := range exs {
				truth = append(truth, c.HTTP(ex))
				c.Advance(time.Millisecond)
			}
			c.Close()
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			pkts, err := readPcap(t, buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i < len(pkts); i++ {
				if pkts[i].ts < pkts[i-1].ts {
					t.Fatalf("frame %d earlier than frame %d", i+1, i)
				}
			}
			if tt.opts.NoHandshake == (pkts[0].flags&flagSYN != 0) {
				t.Errorf("first frame flags %#x with NoHandshake=%v", pkts[0].flags, tt.opts.NoHandshake)
			}
			if !tt.opts.NoHandshake {
				if pkts[1].flags != flagSYN|flagACK || pkts[1].ack != pkts[0].seq+1 || pkts[2].ack != pkts[1].seq+1 {
					t.Errorf("bad handshake: %+v %+v %+v", pkts[0], pkts[1], pkts[2])
				}
			}
			// Every ACK number acknowledges bytes the peer really sent.
			sent := map[netip.AddrPort]uint32{}
			for _, p := range pkts {
				if end := p.seq + uint32(len(p.payload)); p.flags&(flagSYN|flagFIN) != 0 {
					sent[p.src] = max(sent[p.src], end+1)
				} else {
					sent[p.src] = max(sent[p.src], end)
				}
			}
			for i, p := range pkts {
				if p.flags&flagACK != 0 && p.flags&flagRST == 0 && int32(p.ack-sent[p.dst]) > 0 {
					t.Errorf("frame %d acks %d beyond peer's %d", i+1, p.ack, sent[p.dst])
				}
			}
			last := pkts[len(pkts)-3:]
			if last[0].flags != flagFIN|flagACK || last[1].flags != flagFIN|flagACK || last[2].flags != flagACK {
				t.Errorf("close sequence flags %#x %#x %#x", last[0].flags, last[1].flags, last[2].flags)
			}
			checkAgainstTruth(t, pkts, truth)
			streams := reassemble(t, pkts)
			var reorder, retrans, gaps int
			for _, s := range streams {
				reorder += s.reorder
				retrans += s.retrans
				gaps += s.gaps
			}
			if gaps != 0 || (reorder > 0) != tt.wantReorder || (retrans > 0) != tt.wantRetrans {
				t.Errorf("gaps %d reorder %d retrans %d, want reorder %v retrans %v", gaps, reorder, retrans, tt.wantReorder, tt.wantRetrans)
			}
			for i, tr := range truth {
				if !tr.RequestTime.Before(tr.ResponseTime) || tr.RequestEndTime.Before(tr.RequestTime) || tr.ResponseEndTime.Before(tr.ResponseTime) {
					t.Errorf("exchange %d: inconsistent times %+v", i, tr)
				}
			}
		})
	}
}

// TestLoss checks that LoseSegment and LossProb leave a gap that the peer
// acknowledges anyway.
func TestLoss(t *testing.T) {
	tests := []struct {
		name string
		opts ConnOptions
		lose []int
	}{
		{"explicit", ConnOptions{}, []int{1}},
		{"probabilistic", ConnOptions{Rand: rand.New(rand.NewPCG(3, 3)), LossProb: 0.5}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf)
			if err != nil {
				t.Fatal(err)
			}
			c := w.NewConn(netip.MustParseAddrPort("10.0.0.1:1234"), netip.MustParseAddrPort("10.0.0.2:80"), testStart, tt.opts)
			ex, tr := c.Request(Exchange{Path: "/x", RespBody: 20000})
			for _, i := range tt.lose {
				c.LoseSegment(i)
			}
			tr = c.Response(ex, tr)
			c.Close()
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if !tr.CaptureGap {
				t.Error("truth does not flag the capture gap")
			}
			pkts, err := readPcap(t, buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			s := reassemble(t, pkts)[flow{c.ServerAddr(), c.ClientAddr()}]
			full := len(c.appendResponse(nil, &ex))
			// A lost tail is not a gap in the reassembled bytes, only a
			// shorter stream.
			if s.gaps == 0 && len(s.data) == full {
				t.Error("nothing missing from the server stream")
			}
			if len(s.data) > full || (tt.lose != nil && len(s.data) != full) {
				t.Errorf("server stream %d bytes, response is %d", len(s.data), full)
			}
		})
	}
}

// TestInterleave checks that frames of concurrent connections come out in
// time order and that a frame earlier than written ones is an error.
func TestInterleave(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var conns []*Conn
	for i := range 5 {
		conns = append(conns, w.NewConn(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 40000),
			netip.MustParseAddrPort("10.0.1.1:80"), testStart.Add(time.Duration(i)*300*time.Microsecond), ConnOptions{}))
	}
	count := map[*Conn]int{}
	maxPending := 0
	err = w.Interleave(conns, func(c *Conn) bool {
		if count[c] == 20 {
			c.Close()
			return false
		}
		count[c]++
		c.HTTP(Exchange{Path: "/", RespBody: 3000})
		maxPending = max(maxPending, w.Pending())
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	pkts, err := readPcap(t, buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(pkts); i++ {
		if pkts[i].ts < pkts[i-1].ts {
			t.Fatalf("frame %d earlier than frame %d", i+1, i)
		}
	}
	if int64(len(pkts)) != w.Packets() {
		t.Errorf("read %d frames, writer counted %d", len(pkts), w.Packets())
	}
	if maxPending > 60 {
		t.Errorf("up to %d frames pending: Interleave does not stream", maxPending)
	}

	// Going back in time after a flush is reported, not written.
	late := w.NewConn(netip.MustParseAddrPort("10.0.0.9:1"), netip.MustParseAddrPort("10.0.1.1:80"), testStart, ConnOptions{})
	late.Close()
	if err := w.Flush(); err == nil || !strings.Contains(err.Error(), "precedes") {
		t.Errorf("Flush after going back in time: %v", err)
	}
}

// TestMisuse checks errors surfaced by Flush.
func TestMisuse(t *testing.T) {
	tests := []struct {
		name string
		run  func(w *Writer)
	}{
		{"send after close", func(w *Writer) {
			c := w.NewConn(netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"), testStart, ConnOptions{})
			c.Close()
			c.Client([]byte("x"))
		}},
		{"mixed families", func(w *Writer) {
			w.NewConn(netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("[::1]:2"), testStart, ConnOptions{})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := NewWriter(&bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			tt.run(w)
			if err := w.Flush(); err == nil {
				t.Error("Flush succeeded")
			}
		})
	}
}

// TestFiller checks body sizes and the a..z pattern.
func TestFiller(t *testing.T) {
	for n := range 3000 {
		b := appendFiller([]byte("x"), n, 'r')[1:]
		if len(b) != n {
			t.Fatalf("n=%d: len %d", n, len(b))
		}
		if n >= 11 {
			for i, c := range b[9 : n-2] {
				if c != 'a'+byte(i%26) {
					t.Fatalf("n=%d: byte %d is %q", n, i, c)
				}
			}
		}
	}
}
