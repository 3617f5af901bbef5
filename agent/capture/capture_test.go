package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// tcpPacket builds an Ethernet/IPv4/TCP frame from 10.0.0.1:srcPort to
// 10.0.0.2:dstPort carrying payload.
func tcpPacket(t testing.TB, srcPort, dstPort uint16, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{
		SrcMAC:       net.HardwareAddr{0, 1, 2, 3, 4, 5},
		DstMAC:       net.HardwareAddr{0, 1, 2, 3, 4, 6},
		EthernetType: layers.EthernetTypeIPv4,
	}
	ip := &layers.IPv4{
		Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: net.IPv4(10, 0, 0, 1), DstIP: net.IPv4(10, 0, 0, 2),
	}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(srcPort), DstPort: layers.TCPPort(dstPort), Seq: 1, PSH: true, ACK: true, Window: 1024}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, tcp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type fixturePacket struct {
	ts      time.Time
	dstPort uint16
	data    []byte
}

// fixture returns n packets, alternating destination ports 80 and 5432,
// with microsecond timestamps (exact in both pcap flavours).
func fixture(t testing.TB, n int) []fixturePacket {
	t.Helper()
	base := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	pkts := make([]fixturePacket, n)
	for i := range pkts {
		port := uint16(80)
		if i%2 == 1 {
			port = 5432
		}
		pkts[i] = fixturePacket{
			ts:      base.Add(time.Duration(i)*1500*time.Microsecond + 7*time.Microsecond),
			dstPort: port,
			data:    tcpPacket(t, 40000+uint16(i), port, []byte(fmt.Sprintf("packet %d", i))),
		}
	}
	return pkts
}

type packetWriter interface {
	WritePacket(ci gopacket.CaptureInfo, data []byte) error
}

func writePackets(t testing.TB, w packetWriter, pkts []fixturePacket) {
	t.Helper()
	for _, p := range pkts {
		ci := gopacket.CaptureInfo{Timestamp: p.ts, CaptureLength: len(p.data), Length: len(p.data)}
		if err := w.WritePacket(ci, p.data); err != nil {
			t.Fatal(err)
		}
	}
}

// writePcap writes pkts as a classic pcap file and returns its bytes.
func writePcap(t testing.TB, pkts []fixturePacket) []byte {
	t.Helper()
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	writePackets(t, w, pkts)
	return b.Bytes()
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type received struct {
	data []byte
	ts   time.Time
}

// readAll runs h to completion, copying every packet.
func readAll(t testing.TB, h *Handle) ([]received, error) {
	t.Helper()
	var got []received
	err := h.Run(context.Background(), func(data []byte, ts time.Time) {
		got = append(got, received{data: bytes.Clone(data), ts: ts})
	}, func(time.Time) { t.Error("onIdle called for a file") })
	return got, err
}

func TestOpenFile(t *testing.T) {
	pkts := fixture(t, 10)

	var ng bytes.Buffer
	ngw, err := pcapgo.NewNgWriter(&ng, layers.LinkTypeEthernet)
	if err != nil {
		t.Fatal(err)
	}
	writePackets(t, ngw, pkts)
	if err := ngw.Flush(); err != nil {
		t.Fatal(err)
	}

	var nanos bytes.Buffer
	nw := pcapgo.NewWriterNanos(&nanos)
	if err := nw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	nanoPkts := fixture(t, 3)
	for i := range nanoPkts {
		nanoPkts[i].ts = nanoPkts[i].ts.Add(time.Duration(123 + i)) // sub-microsecond
	}
	writePackets(t, nw, nanoPkts)

	tests := []struct {
		name   string
		file   []byte
		filter string
		want   []fixturePacket
	}{
		{name: "pcap", file: writePcap(t, pkts), want: pkts},
		{name: "pcap with filter", file: writePcap(t, pkts), filter: "tcp dst port 80", want: everyOther(pkts)},
		{name: "pcapng", file: ng.Bytes(), want: pkts},
		{name: "pcapng with filter", file: ng.Bytes(), filter: "tcp dst port 80", want: everyOther(pkts)},
		{name: "pcap nanosecond", file: nanos.Bytes(), want: nanoPkts},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := OpenFile(writeFile(t, "in.cap", tc.file), tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			if h.LinkType() != layers.LinkTypeEthernet {
				t.Errorf("LinkType() = %v, want Ethernet", h.LinkType())
			}
			got, err := readAll(t, h)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d packets, want %d", len(got), len(tc.want))
			}
			for i, w := range tc.want {
				if !got[i].ts.Equal(w.ts) {
					t.Errorf("packet %d: ts %v, want %v", i, got[i].ts, w.ts)
				}
				if !bytes.Equal(got[i].data, w.data) {
					t.Errorf("packet %d: data differs", i)
				}
			}
			if s := h.Stats(); s != (Stats{}) {
				t.Errorf("Stats() = %+v for a file, want zero", s)
			}
		})
	}
}

func everyOther(pkts []fixturePacket) []fixturePacket {
	var out []fixturePacket
	for i := 0; i < len(pkts); i += 2 {
		out = append(out, pkts[i])
	}
	return out
}

func TestOpenFileTruncated(t *testing.T) {
	pkts := fixture(t, 5)
	file := writePcap(t, pkts)
	tests := []struct {
		name string
		cut  int // bytes removed from the end
	}{
		{name: "inside packet data", cut: 10},
		{name: "inside record header", cut: len(pkts[4].data) + 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := OpenFile(writeFile(t, "cut.pcap", file[:len(file)-tc.cut]), "")
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			got, err := readAll(t, h)
			if len(got) != 4 {
				t.Errorf("got %d packets before the cut, want 4", len(got))
			}
			if err == nil || !strings.Contains(err.Error(), "truncated") {
				t.Fatalf("Run error = %v, want one mentioning truncated", err)
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestOpenFileErrors(t *testing.T) {
	good := writeFile(t, "good.pcap", writePcap(t, fixture(t, 1)))
	tests := []struct {
		name, path, filter, want string
	}{
		{name: "missing file", path: filepath.Join(t.TempDir(), "nope.pcap"), want: "open capture file"},
		{name: "not a capture", path: writeFile(t, "junk.pcap", []byte("this is not a pcap file at all")), want: "open capture file"},
		{name: "bad filter", path: good, filter: "tcp prt 80", want: "bpf filter: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := OpenFile(tc.path, tc.filter)
			if err == nil {
				h.Close()
				t.Fatal("OpenFile succeeded, want error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestValidateFilter(t *testing.T) {
	tests := []struct {
		name    string
		expr    string
		wantErr string // "" means valid
	}{
		{name: "empty", expr: ""},
		{name: "port", expr: "tcp and (port 80 or port 443)"},
		{name: "host net", expr: "host 127.0.0.2 and net 10.0.0.0/8"},
		{name: "typo", expr: "tcp prt 80", wantErr: "bpf filter: "},
		{name: "syntax", expr: "tcp and (port 80", wantErr: "syntax error"},
		{name: "bad port", expr: "port 99999", wantErr: "port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateFilter(layers.LinkTypeEthernet, 65535, tc.expr)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateFilter(%q) = %v, want nil", tc.expr, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ValidateFilter(%q) = %v, want error containing %q", tc.expr, err, tc.wantErr)
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestOpenLiveErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  LiveConfig
		want string
	}{
		{name: "unknown interface", cfg: LiveConfig{Interface: "orbweaver9"}, want: `interface "orbweaver9": `},
		{name: "empty interface", cfg: LiveConfig{}, want: "interface: "},
		{name: "bad filter", cfg: LiveConfig{Interface: "lo", Filter: "tcp prt 80"}, want: "bpf filter: "},
		{name: "negative snaplen", cfg: LiveConfig{Interface: "lo", Snaplen: -1}, want: "snaplen: "},
		{name: "negative buffer", cfg: LiveConfig{Interface: "lo", BufferSizeMiB: -1}, want: "buffer size: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := OpenLive(tc.cfg)
			if err == nil {
				h.Close()
				t.Fatal("OpenLive succeeded, want error")
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error %q does not start with %q", err, tc.want)
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestListInterfaces(t *testing.T) {
	ifaces, err := ListInterfaces()
	if err != nil {
		t.Skipf("no capture devices: %v", err)
	}
	for _, i := range ifaces {
		if i.Name != "lo" {
			continue
		}
		if !i.Loopback || !i.Up {
			t.Errorf("lo: Loopback=%v Up=%v, want both true", i.Loopback, i.Up)
		}
		if !contains(i.Addresses, "127.0.0.1/8") {
			t.Errorf("lo addresses %v lack 127.0.0.1/8", i.Addresses)
		}
		return
	}
	t.Errorf("lo not in %+v", ifaces)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// echoServer accepts connections on 127.0.0.1 and discards what they send.
func echoServer(t *testing.T) (port int) {
	t.Helper()
	return serveTCP(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
}

// serveTCP accepts connections on 127.0.0.1 and runs handle on each (the
// connection is closed when it returns) until the test ends.
func serveTCP(t *testing.T, handle func(net.Conn)) (port int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).Port
}

func send(t *testing.T, port, n int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(bytes.Repeat([]byte("x"), n)); err != nil {
		t.Fatal(err)
	}
}

func TestLiveLoopback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("live capture needs root (or CAP_NET_RAW)")
	}
	watched, other := echoServer(t), echoServer(t)
	const readTimeout = 100 * time.Millisecond
	h, err := OpenLive(LiveConfig{
		Interface:   "lo",
		Filter:      fmt.Sprintf("tcp port %d", watched),
		ReadTimeout: readTimeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu         sync.Mutex
		seen       int
		payload    int
		wrongPorts []string
		idles      atomic.Int64
	)
	runErr := make(chan error, 1)
	go func() {
		runErr <- h.Run(ctx, func(data []byte, ts time.Time) {
			pkt := gopacket.NewPacket(data, h.LinkType(), gopacket.NoCopy)
			tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
			mu.Lock()
			defer mu.Unlock()
			seen++
			if !ok || (int(tcp.SrcPort) != watched && int(tcp.DstPort) != watched) {
				wrongPorts = append(wrongPorts, pkt.String())
				return
			}
			if since := time.Since(ts); since < -time.Second || since > 10*time.Second {
				t.Errorf("packet timestamp %v is not wall-clock (now %v)", ts, time.Now())
			}
			payload += len(tcp.Payload)
		}, func(time.Time) { idles.Add(1) })
	}()

	// Quiet interface (for this filter): onIdle must tick.
	time.Sleep(3 * readTimeout)
	if idles.Load() == 0 {
		t.Error("onIdle not called while no packet arrived")
	}

	const n = 20000
	send(t, other, n)
	send(t, watched, n)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		p := payload
		mu.Unlock()
		if p >= n {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	start := time.Now()
	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
		if d := time.Since(start); d > 3*readTimeout {
			t.Errorf("Run returned %v after cancel, want within ~%v", d, readTimeout)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}

	mu.Lock()
	defer mu.Unlock()
	if seen == 0 {
		t.Fatal("no packets seen on lo")
	}
	if payload != n {
		t.Errorf("captured %d payload bytes to port %d, want %d", payload, watched, n)
	}
	if len(wrongPorts) > 0 {
		t.Errorf("%d packets not to port %d passed the filter, first: %s", len(wrongPorts), watched, wrongPorts[0])
	}
	if s := h.Stats(); s.Received < uint64(seen) {
		t.Errorf("Stats().Received = %d, want >= %d packets seen", s.Received, seen)
	}
	t.Logf("seen %d packets, %d payload bytes, %d idle calls, stats %+v", seen, payload, idles.Load(), h.Stats())
}

func TestLiveCloseStopsRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("live capture needs root (or CAP_NET_RAW)")
	}
	h, err := OpenLive(LiveConfig{Interface: "lo", Filter: "tcp port 1", ReadTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- h.Run(context.Background(), func([]byte, time.Time) {}, nil) }()
	time.Sleep(100 * time.Millisecond)
	h.Close()
	select {
	case err := <-runErr:
		if err != nil && !errors.Is(err, io.EOF) {
			t.Errorf("Run after Close = %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	h.Close() // idempotent
	_ = h.Stats()
}

func BenchmarkRunFile(b *testing.B) {
	pkts := fixture(b, 1000)
	path := writeFile(b, "bench.pcap", writePcap(b, pkts))
	b.ReportAllocs()
	for b.Loop() {
		h, err := OpenFile(path, "")
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		if err := h.Run(context.Background(), func([]byte, time.Time) { n++ }, nil); err != nil {
			b.Fatal(err)
		}
		h.Close()
		if n != len(pkts) {
			b.Fatalf("got %d packets", n)
		}
	}
}

// pingPongServer answers every reqSize bytes read with respSize bytes, on
// 127.0.0.1, until the client closes.
func pingPongServer(t *testing.T, reqSize, respSize int) (port int) {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		req, resp := make([]byte, reqSize), bytes.Repeat([]byte("r"), respSize)
		for {
			if _, err := io.ReadFull(c, req); err != nil {
				return
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})
}

// TestLiveExchanges captures n request/response exchanges on one loopback
// connection: each side's payload arrives as exactly n segments, and the
// kernel drops none.
func TestLiveExchanges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("live capture needs root (or CAP_NET_RAW)")
	}
	const (
		n        = 5000
		reqSize  = 120
		respSize = 300
	)
	port := pingPongServer(t, reqSize, respSize)
	h, err := OpenLive(LiveConfig{Interface: "lo", Filter: fmt.Sprintf("tcp port %d", port), BufferSizeMiB: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	var (
		mu               sync.Mutex
		packets          int
		toServer, toCli  int // segments with payload
		badSize          []int
		lastPacket       time.Time
		idleAfterTraffic int
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() {
		runErr <- h.Run(ctx, func(data []byte, _ time.Time) {
			pkt := gopacket.NewPacket(data, h.LinkType(), gopacket.NoCopy)
			tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
			mu.Lock()
			defer mu.Unlock()
			packets++
			lastPacket = time.Now()
			idleAfterTraffic = 0
			if !ok || len(tcp.Payload) == 0 {
				return
			}
			switch {
			case int(tcp.DstPort) == port && len(tcp.Payload) == reqSize:
				toServer++
			case int(tcp.SrcPort) == port && len(tcp.Payload) == respSize:
				toCli++
			default:
				badSize = append(badSize, len(tcp.Payload))
			}
		}, func(time.Time) {
			mu.Lock()
			if packets > 0 {
				idleAfterTraffic++
			}
			mu.Unlock()
		})
	}()

	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	req, resp := bytes.Repeat([]byte("q"), reqSize), make([]byte, respSize)
	for i := range n {
		if _, err := c.Write(req); err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
	}
	c.Close()

	// Wait until the connection's last packets have been read: two idle
	// calls in a row after traffic (10 s at most).
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		quiet := idleAfterTraffic >= 2
		mu.Unlock()
		if quiet {
			break
		}
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run = %v", err)
	}
	s := h.Stats()
	mu.Lock()
	defer mu.Unlock()
	if toServer != n || toCli != n {
		t.Errorf("captured %d request and %d response segments, want %d each", toServer, toCli, n)
	}
	if len(badSize) > 0 {
		t.Errorf("%d segments with an unexpected payload size, first %d bytes", len(badSize), badSize[0])
	}
	if s.KernelDrops != 0 {
		t.Errorf("Stats().KernelDrops = %d, want 0", s.KernelDrops)
	}
	// On lo the kernel counts the outgoing and the incoming copy.
	if s.Received < 2*uint64(packets) {
		t.Errorf("Stats().Received = %d, want at least 2 × %d packets delivered", s.Received, packets)
	}
	t.Logf("%d packets delivered, last %v before cancel; stats %+v", packets, time.Since(lastPacket).Round(time.Millisecond), s)
}

// TestLiveIdle checks that, with no packet passing the filter, Run calls
// onIdle about every ReadTimeout with the wall clock, and returns soon after
// its context is cancelled.
func TestLiveIdle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("live capture needs root (or CAP_NET_RAW)")
	}
	const readTimeout = 50 * time.Millisecond
	// Port 1 (tcpmux) is not used on loopback.
	h, err := OpenLive(LiveConfig{Interface: "lo", Filter: "tcp port 1", ReadTimeout: readTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu    sync.Mutex
		calls []time.Time
		skew  time.Duration
	)
	runErr := make(chan error, 1)
	go func() {
		runErr <- h.Run(ctx, func([]byte, time.Time) { t.Error("packet delivered on an idle filter") }, func(now time.Time) {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, now)
			skew = max(skew, time.Since(now).Abs())
		})
	}()
	const watch = time.Second
	time.Sleep(watch)
	start := time.Now()
	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
		if d := time.Since(start); d > 4*readTimeout {
			t.Errorf("Run returned %v after cancel, want within about %v", d, readTimeout)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	mu.Lock()
	defer mu.Unlock()
	// 20 calls expected; a loaded machine delays some.
	if want := int(watch / readTimeout / 4); len(calls) < want {
		t.Errorf("onIdle called %d times in %v, want at least %d (ReadTimeout %v)", len(calls), watch, want, readTimeout)
	}
	if skew > 50*time.Millisecond {
		t.Errorf("onIdle's time is %v away from the wall clock", skew)
	}
	t.Logf("onIdle called %d times in %v", len(calls), watch)
}

// TestLiveLoneExchangeLatency checks that a single exchange on an otherwise
// quiet filter is delivered about ReadTimeout after it happened: the kernel
// hands over a partly filled buffer block when its timeout expires instead
// of waiting for it to fill.
func TestLiveLoneExchangeLatency(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("live capture needs root (or CAP_NET_RAW)")
	}
	const readTimeout = 50 * time.Millisecond
	port := pingPongServer(t, 10, 10)
	h, err := OpenLive(LiveConfig{Interface: "lo", Filter: fmt.Sprintf("tcp port %d", port), ReadTimeout: readTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := make(chan time.Time, 1)
	go func() {
		_ = h.Run(ctx, func([]byte, time.Time) {
			select {
			case first <- time.Now():
			default:
			}
		}, nil)
	}()
	time.Sleep(3 * readTimeout) // the capture is idle
	sent := time.Now()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case got := <-first:
		// A block that never filled would not arrive at all (no timing
		// threshold here: the machine may be loaded).
		d := got.Sub(sent)
		t.Logf("first packet delivered %v after the connection (ReadTimeout %v)", d.Round(time.Millisecond), readTimeout)
	case <-time.After(10 * time.Second):
		t.Fatal("no packet delivered within 10 s: the partly filled block was never handed over")
	}
}
