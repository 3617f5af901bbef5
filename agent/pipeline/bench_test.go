package pipeline

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/orbweaver/orbweaver/internal/model"
	"github.com/orbweaver/orbweaver/internal/pcapgen"
)

// workload is a synthetic keep-alive HTTP/1.1 capture held in memory:
// conns connections, each repeating the same exchanges. Replaying it again
// shifts the sequence numbers by what each side sent in one pass, so the
// pipeline sees one endless in-order conversation per connection.
type workload struct {
	setup  [][]byte // handshakes, fed once
	frames [][]byte // one pass of exchanges, round-robin over connections
	fromC  []bool   // frame i is client -> server
	dC, dS uint32   // bytes sent per pass per connection by client / server
	calls  int      // calls per pass
}

func newWorkload(conns, exchanges int) *workload {
	w := &workload{}
	cvs := make([]*conv, conns)
	for i := range cvs {
		cvs[i] = newConv(fmt.Sprintf("10.1.%d.%d:%d", i/250, i%250+1, 40000+i), "10.2.0.1:8080", uint32(i)*1000, uint32(i)*7777)
		cvs[i].handshake()
		w.setup = append(w.setup, cvs[i].frames...)
		cvs[i].frames = nil
	}
	body := strings.Repeat("x", 1200)
	for e := 0; e < exchanges; e++ {
		for _, c := range cvs {
			c.req(fmt.Sprintf("GET /api/items/%d?page=2 HTTP/1.1\r\nHost: api.internal\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\nX-Request-Id: %08d\r\n\r\n", e, e))
			if e%2 == 0 {
				c.resp("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"items\":[1,2,3]}")
			} else {
				c.resp("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2400\r\n\r\n" + body)
				c.resp(body)
			}
			c.ack(true)
			w.frames = append(w.frames, c.frames...)
			for _, f := range c.frames {
				w.fromC = append(w.fromC, binary.BigEndian.Uint16(f[34:]) != 8080)
			}
			c.frames = nil
		}
	}
	// Per-connection deltas are the bytes sent in one pass (handshake
	// excluded), the same for every connection: count connection 0's.
	for i, f := range w.frames {
		if binary.BigEndian.Uint16(f[34:]) == 40000 || binary.BigEndian.Uint16(f[36:]) == 40000 {
			n := uint32(len(f) - 54)
			if w.fromC[i] {
				w.dC += n
			} else {
				w.dS += n
			}
		}
	}
	w.calls = conns * exchanges
	return w
}

// shift moves every frame one pass forward in sequence space.
func (w *workload) shift() {
	for i, f := range w.frames {
		tcp := f[34:]
		ds, da := w.dS, w.dC
		if w.fromC[i] {
			ds, da = w.dC, w.dS
		}
		binary.BigEndian.PutUint32(tcp[4:], binary.BigEndian.Uint32(tcp[4:])+ds)
		binary.BigEndian.PutUint32(tcp[8:], binary.BigEndian.Uint32(tcp[8:])+da)
	}
}

// BenchmarkPipeline measures the whole decode path (frame decoding, flow
// lookup, reassembly, HTTP parsing, call building) on 64 keep-alive
// connections; one op is one packet. Sequence numbers are shifted in place
// between passes (included in the timing; a few ns per packet).
func BenchmarkPipeline(b *testing.B) {
	w := newWorkload(64, 100)
	calls := 0
	p := New(DefaultConfig(), func(*model.HTTPCall) { calls++ })
	ts := base
	for _, f := range w.setup {
		p.Packet(layers.LinkTypeEthernet, f, ts)
	}
	b.ReportAllocs()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	b.ResetTimer()
	n := len(w.frames)
	var bytes int64
	for i := 0; i < b.N; i++ {
		j := i % n
		if j == 0 && i > 0 {
			w.shift()
		}
		ts = ts.Add(500 * time.Nanosecond)
		p.Packet(layers.LinkTypeEthernet, w.frames[j], ts)
		bytes += int64(len(w.frames[j]))
	}
	b.StopTimer()
	runtime.ReadMemStats(&m1)
	sec := b.Elapsed().Seconds()
	// allocs/op rounds to an integer; these are exact.
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(b.N), "allocs/packet")
	if calls > 0 {
		b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(calls), "allocs/call")
	}
	b.ReportMetric(float64(b.N)/sec, "packets/s")
	b.ReportMetric(float64(calls)/sec, "calls/s")
	b.ReportMetric(float64(bytes)/sec/1e6, "MB/s")
	if st := p.Stats(); st.HTTPParseErrors != 0 || st.GapBytes != 0 || st.Retransmissions != 0 {
		b.Fatalf("workload is not clean: %+v", st)
	}
}

// TestPipelineInOrderAllocs: packets that do not finish a call allocate
// nothing; a finished call costs a few allocations (the call and its
// strings).
func TestPipelineInOrderAllocs(t *testing.T) {
	w := newWorkload(4, 20)
	p := New(DefaultConfig(), func(*model.HTTPCall) {})
	for _, f := range w.setup {
		p.Packet(layers.LinkTypeEthernet, f, base)
	}
	// Warm up one pass (map growth, buffers).
	for _, f := range w.frames {
		p.Packet(layers.LinkTypeEthernet, f, base)
	}
	allocs := testing.AllocsPerRun(1, func() { // runs twice: warm-up + measured
		w.shift()
		for _, f := range w.frames {
			p.Packet(layers.LinkTypeEthernet, f, base)
		}
	})
	perCall := allocs / float64(w.calls)
	t.Logf("%.0f allocs for %d packets, %d calls: %.2f per call", allocs, len(w.frames), w.calls, perCall)
	if perCall > 4 {
		t.Errorf("%.2f allocations per call", perCall)
	}
	if st := p.Stats(); st.Calls != uint64(3*w.calls) || st.HTTPParseErrors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// BenchmarkPipelineFile1M measures the agent's file path end to end on a
// generated capture of about 1.05M packets (1000 keep-alive connections ×
// 65 exchanges, ~900 MB, written to a temporary file first; not timed):
// reading the pcap (zero-copy), frame decoding, reassembly, HTTP parsing
// and the derived fields with the default configuration (and, in the
// second case, body capture at 64 KiB). One op is one pass over the file;
// run with -benchtime 1x.
func BenchmarkPipelineFile1M(b *testing.B) {
	path := filepath.Join(b.TempDir(), "volume.pcap")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	sum, err := pcapgen.GenerateHTTP(w, pcapgen.VolumeSpec{Connections: 1000, ExchangesPerConn: 65, Seed: 1})
	if err == nil {
		err = w.Flush()
	}
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err != nil {
		b.Fatalf("generate: %v", err)
	}
	b.Logf("capture: %d packets, %.0f MB, %d exchanges", sum.Packets, float64(sum.Bytes)/1e6, sum.Exchanges)
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"default", DefaultConfig()},
		{"capture_bodies", func() Config {
			c := DefaultConfig()
			c.Parsing.CaptureBodies = true
			return c
		}()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var packets, bytes, calls int64
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			for b.Loop() {
				n, nb, nc := replayFile(b, path, bc.cfg)
				packets, bytes, calls = packets+n, bytes+nb, calls+nc
			}
			runtime.ReadMemStats(&m1)
			sec := b.Elapsed().Seconds()
			b.ReportMetric(float64(packets)/sec, "packets/s")
			b.ReportMetric(float64(bytes)/sec/1e6, "MB/s")
			b.ReportMetric(float64(calls)/sec, "calls/s")
			b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(packets), "allocs/packet")
			b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(max(calls, 1)), "allocs/call")
		})
	}
}

// replayFile runs a pcap file through a new pipeline, reading it with the
// zero-copy reader, and returns packets, bytes and calls.
func replayFile(b *testing.B, path string, cfg Config) (packets, bytes, calls int64) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		b.Fatal(err)
	}
	p := New(cfg, func(*model.HTTPCall) { calls++ })
	lt := r.LinkType()
	var last time.Time
	for {
		data, ci, err := r.ZeroCopyReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		p.Packet(lt, data, ci.Timestamp)
		packets++
		bytes += int64(len(data))
		if ci.Timestamp.Sub(last) > time.Second {
			p.Tick(ci.Timestamp)
			last = ci.Timestamp
		}
	}
	p.Close()
	if st := p.Stats(); st.HTTPParseErrors != 0 || st.DecodeErrors != 0 {
		b.Fatalf("capture not clean: %+v", st)
	}
	return packets, bytes, calls
}
