package pipeline

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/orbweaver/orbweaver/agent/packet"
	"github.com/orbweaver/orbweaver/internal/model"
)

var base = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// ethFrame builds an Ethernet/IPv4/TCP frame by hand (no checksums: the
// decoder does not verify them).
func ethFrame(src, dst netip.AddrPort, seq, ack uint32, flags packet.Flags, payload []byte) []byte {
	b := make([]byte, 14+20+20+len(payload))
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(40+len(payload)))
	ip[8], ip[9] = 64, 6
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = byte(flags)
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	copy(tcp[20:], payload)
	return b
}

// peer is one end of a simulated TCP connection.
type peer struct {
	addr netip.AddrPort
	seq  uint32
}

// conv simulates a TCP conversation and records its frames.
type conv struct {
	cli, srv peer
	frames   [][]byte
}

func newConv(cli, srv string, cliISN, srvISN uint32) *conv {
	return &conv{cli: peer{netip.MustParseAddrPort(cli), cliISN}, srv: peer{netip.MustParseAddrPort(srv), srvISN}}
}

// handshake appends SYN, SYN-ACK, ACK.
func (c *conv) handshake() *conv {
	c.frames = append(c.frames, ethFrame(c.cli.addr, c.srv.addr, c.cli.seq, 0, packet.SYN, nil))
	c.cli.seq++
	c.frames = append(c.frames, ethFrame(c.srv.addr, c.cli.addr, c.srv.seq, c.cli.seq, packet.SYN|packet.ACK, nil))
	c.srv.seq++
	c.frames = append(c.frames, ethFrame(c.cli.addr, c.srv.addr, c.cli.seq, c.srv.seq, packet.ACK, nil))
	return c
}

// send appends one data segment from the client (fromClient) or the server,
// and returns its frame index.
func (c *conv) send(fromClient bool, data string, extra packet.Flags) int {
	from, to := &c.cli, &c.srv
	if !fromClient {
		from, to = to, from
	}
	c.frames = append(c.frames, ethFrame(from.addr, to.addr, from.seq, to.seq, packet.ACK|packet.PSH|extra, []byte(data)))
	from.seq += uint32(len(data))
	if extra.Has(packet.FIN) {
		from.seq++
	}
	return len(c.frames) - 1
}

func (c *conv) req(data string) int  { return c.send(true, data, 0) }
func (c *conv) resp(data string) int { return c.send(false, data, 0) }

// ack appends a pure ACK from the client (fromClient) or server.
func (c *conv) ack(fromClient bool) {
	from, to := &c.cli, &c.srv
	if !fromClient {
		from, to = to, from
	}
	c.frames = append(c.frames, ethFrame(from.addr, to.addr, from.seq, to.seq, packet.ACK, nil))
}

// fin appends FINs from both sides.
func (c *conv) fin() {
	c.send(true, "", packet.FIN)
	c.send(false, "", packet.FIN)
	c.ack(true)
}

// run feeds frames, frame i at base + i ms, and returns the calls.
func run(t *testing.T, cfg Config, frames [][]byte, closeAtEnd bool) ([]*model.HTTPCall, *Pipeline) {
	t.Helper()
	var calls []*model.HTTPCall
	p := New(cfg, func(c *model.HTTPCall) { calls = append(calls, c) })
	for i, f := range frames {
		buf := append([]byte(nil), f...)
		p.Packet(layers.LinkTypeEthernet, buf, base.Add(time.Duration(i)*time.Millisecond))
		clear(buf) // capture buffers are reused: nothing may keep them
	}
	if closeAtEnd {
		p.Close()
	}
	return calls, p
}

const (
	req1  = "GET /one?a=b HTTP/1.1\r\nHost: svc\r\nX-Request-Id: r1\r\n\r\n"
	resp1 = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Type: text/plain\r\n\r\n0123456789"
	req2  = "POST /two HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc"
	resp2 = "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n"
)

func statuses(calls []*model.HTTPCall) string {
	var b strings.Builder
	for _, c := range calls {
		b.WriteString(c.Method + " " + c.Path + " " + string(c.ParseStatus) + ";")
	}
	return b.String()
}

func TestPipelineKeepAlive(t *testing.T) {
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 100, 9000).handshake()
	i1 := c.req(req1)
	c.resp(resp1[:30])
	i2 := c.resp(resp1[30:])
	c.ack(true)
	i3 := c.req(req2[:20])
	c.req(req2[20:])
	i4 := c.resp(resp2)
	c.fin()
	calls, p := run(t, Config{}, c.frames, false)
	if got := statuses(calls); got != "GET /one ok;POST /two ok;" {
		t.Fatalf("calls %s", got)
	}
	a := calls[0]
	ms := func(i int) time.Time { return base.Add(time.Duration(i) * time.Millisecond) }
	if a.ClientAddr.String() != "10.0.0.1:50000" || a.ServerAddr.String() != "10.0.0.2:8080" || a.Host != "svc" || a.Query != "a=b" ||
		a.XRequestID != "r1" || a.Status != 200 || a.ResponseBodySize != 10 || a.ResponseContentType != "text/plain" ||
		!a.RequestStart.Equal(ms(i1)) || !a.RequestEnd.Equal(ms(i1)) || !a.ResponseStart.Equal(ms(i1+1)) || !a.ResponseEnd.Equal(ms(i2)) {
		t.Errorf("call 1: %+v", *a)
	}
	b := calls[1]
	if b.Status != 201 || b.RequestBodySize != 3 || b.ResponseBodySize != 4 || !b.RequestStart.Equal(ms(i3)) || !b.RequestEnd.Equal(ms(i3+1)) || !b.ResponseEnd.Equal(ms(i4)) {
		t.Errorf("call 2: %+v", *b)
	}
	st := p.Stats()
	if st.Connections != 1 || st.ActiveConnections != 0 || st.Calls != 2 || st.Packets != uint64(len(c.frames)) {
		t.Errorf("stats %+v", st)
	}
}

func TestPipelineReorderAndRetransmit(t *testing.T) {
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 0xFFFFFF00, 7).handshake()
	c.req(req1)
	a := c.resp(resp1[:20])
	b := c.resp(resp1[20:40])
	d := c.resp(resp1[40:])
	f := c.frames
	// Server segments arrive b, d, a (reordered), then a retransmission of b.
	f[a], f[b], f[d] = f[b], f[d], f[a]
	f = append(f, f[a])
	calls, p := run(t, Config{}, f, true)
	if got := statuses(calls); got != "GET /one ok;" || calls[0].ResponseBodySize != 10 {
		t.Fatalf("calls %s", got)
	}
	st := p.Stats()
	if st.OutOfOrder != 2 || st.Retransmissions != 1 || st.GapBytes != 0 || st.BufferedBytes != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestPipelineNoResponseAtClose(t *testing.T) {
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 1, 2).handshake()
	c.req(req1)
	calls, p := run(t, Config{}, c.frames, true)
	if got := statuses(calls); got != "GET /one no_response;" {
		t.Fatalf("calls %s", got)
	}
	if p.Stats().ActiveConnections != 0 {
		t.Errorf("active %d", p.Stats().ActiveConnections)
	}
}

func TestPipelineIdleExpiry(t *testing.T) {
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 1, 2).handshake()
	c.req(req1)
	var calls []*model.HTTPCall
	p := New(Config{IdleTimeout: time.Second}, func(c *model.HTTPCall) { calls = append(calls, c) })
	for i, f := range c.frames {
		p.Packet(layers.LinkTypeEthernet, f, base.Add(time.Duration(i)*time.Millisecond))
	}
	p.Tick(base.Add(500 * time.Millisecond))
	if len(calls) != 0 {
		t.Fatalf("expired too early")
	}
	p.Tick(base.Add(2 * time.Second))
	if got := statuses(calls); got != "GET /one no_response;" || p.Stats().ExpiredConnections != 1 {
		t.Fatalf("calls %s, stats %+v", got, p.Stats())
	}
}

func TestPipelineResetTruncates(t *testing.T) {
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 1, 2).handshake()
	c.req(req1)
	c.resp(resp1[:len(resp1)-3])
	c.send(false, "", packet.RST)
	calls, _ := run(t, Config{}, c.frames, false)
	if got := statuses(calls); got != "GET /one truncated;" {
		t.Fatalf("calls %s", got)
	}
}

func TestPipelineGapProvedByAck(t *testing.T) {
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 1, 2).handshake()
	c.req(req1)
	c.resp(resp1[:len(resp1)-6])
	lost := c.resp("012")
	c.resp("345")
	c.ack(true)
	c.req(req1)
	c.resp(resp1)
	f := append(c.frames[:lost:lost], c.frames[lost+1:]...)
	calls, p := run(t, Config{}, f, true)
	if got := statuses(calls); got != "GET /one gap;GET /one ok;" || calls[0].ResponseBodySize != 10 {
		t.Fatalf("calls %s", got)
	}
	if st := p.Stats(); st.GapBytes != 3 || st.CapDroppedBytes != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestPipelineSnaplen: a segment cut by the snap length leaves a gap in the
// body; the call keeps its framing and is marked gap.
func TestPipelineSnaplen(t *testing.T) {
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 1, 2).handshake()
	c.req(req1)
	r := c.resp(resp1)
	c.req(req1)
	c.resp(resp1)
	c.frames[r] = c.frames[r][:len(c.frames[r])-4] // snap length: 4 body bytes cut
	calls, p := run(t, Config{}, c.frames, true)
	if got := statuses(calls); got != "GET /one gap;GET /one ok;" || calls[0].ResponseBodySize != 10 {
		t.Fatalf("calls %s", got)
	}
	if st := p.Stats(); st.SnapTruncated != 1 || st.GapBytes != 4 {
		t.Errorf("stats %+v", st)
	}
}

func TestPipelineMidStreamJoin(t *testing.T) {
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 5000, 7000)
	c.resp("tail of a previous body")
	c.req(req1)
	c.resp(resp1)
	calls, _ := run(t, Config{}, c.frames, true)
	if got := statuses(calls); got != "GET /one ok;" || calls[0].ClientAddr.Port() != 50000 {
		t.Fatalf("calls %s", got)
	}
}

func TestPipelineNonHTTP(t *testing.T) {
	c := newConv("10.0.0.1:50000", "10.0.0.2:443", 1, 2).handshake()
	c.req("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")
	c.resp("\x16\x03\x03\x00\x5d\x02")
	c.fin()
	calls, p := run(t, Config{}, c.frames, true)
	st := p.Stats()
	if len(calls) != 0 || st.NonHTTPConnections != 1 || st.IgnoredBytes != 6 || st.ActiveConnections != 0 {
		t.Fatalf("calls %d stats %+v", len(calls), st)
	}
}

func TestPipelineUpgrade(t *testing.T) {
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 1, 2).handshake()
	c.req("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	c.resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
	c.req("\x81\x85GET / HTTP/1.1\r\n\r\n")
	calls, p := run(t, Config{}, c.frames, true)
	if got := statuses(calls); got != "GET /ws upgraded;" || calls[0].Status != 101 || p.Stats().UpgradedConnections != 1 {
		t.Fatalf("calls %s stats %+v", got, p.Stats())
	}
}

func TestPipelineMaxConnections(t *testing.T) {
	a := newConv("10.0.0.1:50000", "10.0.0.2:8080", 1, 2).handshake()
	b := newConv("10.0.0.1:50001", "10.0.0.2:8080", 1, 2).handshake()
	a.req(req1)
	b.req(req1)
	_, p := run(t, Config{MaxConnections: 1}, append(a.frames, b.frames...), true)
	if st := p.Stats(); st.Connections != 1 || st.ConnectionsRejected != 3 { // SYN, SYN-ACK, data; a pure ACK opens nothing
		t.Fatalf("stats %+v", st)
	}
}

func TestPipelineLateDuplicateAndPortReuse(t *testing.T) {
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 1, 2).handshake()
	c.req(req1)
	r := c.resp(resp1)
	c.fin()
	f := append(c.frames, c.frames[0], c.frames[r]) // late duplicates of the SYN and the response
	d := newConv("10.0.0.1:50000", "10.0.0.2:8080", 5000, 6000).handshake()
	d.req(req2)
	d.resp(resp2)
	f = append(f, d.frames...)
	calls, p := run(t, Config{}, f, true)
	if got := statuses(calls); got != "GET /one ok;POST /two ok;" {
		t.Fatalf("calls %s", got)
	}
	if st := p.Stats(); st.LateSegments != 3 || st.Connections != 2 { // last ACK + 2 duplicates
		t.Errorf("stats %+v", st)
	}
}

func TestPipelineDecodeErrors(t *testing.T) {
	var n int
	p := New(DefaultConfig(), func(*model.HTTPCall) { n++ })
	p.Packet(layers.LinkTypeEthernet, []byte{1, 2, 3}, base)
	p.Packet(layers.LinkTypeIEEE802_11, make([]byte, 100), base)
	p.Packet(layers.LinkTypeEthernet, make([]byte, 60), base) // EtherType 0: not TCP
	st := p.Stats()
	if st.DecodeErrors != 2 || st.NonTCP != 1 || st.Packets != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// TestPipelineGopacketFrames feeds frames built by gopacket (IPv6 over
// 802.1Q) to check the flat decoder against an independent encoder.
func TestPipelineGopacketFrames(t *testing.T) {
	cli, srv := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	mk := func(fromCli bool, seq, ack uint32, syn bool, data string) []byte {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: cli.AsSlice(), DstIP: srv.AsSlice()}
		tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, Seq: seq, Ack: ack, SYN: syn, ACK: !syn || !fromCli, PSH: data != "", Window: 1000}
		if !fromCli {
			ip.SrcIP, ip.DstIP = ip.DstIP, ip.SrcIP
			tcp.SrcPort, tcp.DstPort = tcp.DstPort, tcp.SrcPort
		}
		_ = tcp.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			&layers.Ethernet{SrcMAC: []byte{0, 1, 2, 3, 4, 5}, DstMAC: []byte{0, 1, 2, 3, 4, 6}, EthernetType: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 42, Type: layers.EthernetTypeIPv6}, ip, tcp, gopacket.Payload(data))
		if err != nil {
			t.Fatalf("serialize: %v", err)
		}
		return buf.Bytes()
	}
	frames := [][]byte{
		mk(true, 10, 0, true, ""),
		mk(false, 500, 11, true, ""),
		mk(true, 11, 501, false, req1),
		mk(false, 501, 11+uint32(len(req1)), false, resp1),
	}
	calls, _ := run(t, Config{}, frames, true)
	if got := statuses(calls); got != "GET /one ok;" || calls[0].ClientAddr.String() != "[2001:db8::1]:40000" {
		t.Fatalf("calls %s", got)
	}
}

// TestStatsConcurrent: Stats may be read while the pipeline runs (run with
// -race).
func TestStatsConcurrent(t *testing.T) {
	w := newWorkload(4, 50)
	p := New(DefaultConfig(), func(*model.HTTPCall) {})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, f := range append(w.setup, w.frames...) {
			p.Packet(layers.LinkTypeEthernet, f, base)
		}
		p.Tick(base)
		p.Close()
	}()
	for {
		select {
		case <-done:
			if st := p.Stats(); st.Calls != uint64(w.calls) {
				t.Fatalf("calls %d, want %d", st.Calls, w.calls)
			}
			return
		default:
			_ = p.Stats()
		}
	}
}
