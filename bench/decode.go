package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/orbweaver/orbweaver/agent/pipeline"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/callconv"
	"github.com/orbweaver/orbweaver/internal/model"
	"github.com/orbweaver/orbweaver/internal/pcapgen"
)

// truth is the ground truth of a generated capture: its calls as a
// multiset of keys, and their order-independent hash.
type truth struct {
	keys  map[string]int
	calls int64
	sum   uint64
	seed  maphash.Seed
}

// callHasher hashes the identity of a call (client, method, path, query,
// status) without allocating; it is not safe for concurrent use.
type callHasher struct{ h maphash.Hash }

func newCallHasher(seed maphash.Seed) *callHasher {
	c := &callHasher{}
	c.h.SetSeed(seed)
	return c
}

func (c *callHasher) sum(client netip.AddrPort, method, path, query string, status int) uint64 {
	c.h.Reset()
	a := client.Addr().As16()
	c.h.Write(a[:])
	var b [10]byte
	binary.LittleEndian.PutUint16(b[0:], client.Port())
	binary.LittleEndian.PutUint64(b[2:], uint64(status))
	c.h.Write(b[:])
	c.h.WriteString(method)
	c.h.WriteByte(0)
	c.h.WriteString(path)
	c.h.WriteByte(0)
	c.h.WriteString(query)
	return c.h.Sum64()
}

func callKey(client netip.AddrPort, method, path, query string, status int) string {
	return fmt.Sprintf("%s %s %s?%s -> %d", client, method, path, query, status)
}

// generateCapture writes the decode section's capture and returns its
// ground truth.
func generateCapture(path string, s sizes) (pcapgen.Summary, *truth, error) {
	f, err := os.Create(path)
	if err != nil {
		return pcapgen.Summary{}, nil, fmt.Errorf("create capture: %w", err)
	}
	defer f.Close()
	t := &truth{keys: make(map[string]int), seed: maphash.MakeSeed()}
	h := newCallHasher(t.seed)
	var perr error
	w := bufio.NewWriterSize(f, 1<<20)
	sum, err := pcapgen.GenerateHTTP(w, pcapgen.VolumeSpec{
		Connections: s.DecodeConns, ExchangesPerConn: s.DecodeExchanges, Seed: 1, ImpairmentRate: s.Impairment,
		OnExchange: func(x pcapgen.Truth) {
			ip, err := netip.ParseAddr(x.ClientIP)
			if err != nil {
				perr = fmt.Errorf("ground truth client %q: %w", x.ClientIP, err)
				return
			}
			c := netip.AddrPortFrom(ip, uint16(x.ClientPort))
			t.keys[callKey(c, x.Method, x.Path, x.Query, x.Status)]++
			t.sum += h.sum(c, x.Method, x.Path, x.Query, x.Status)
			t.calls++
		},
	})
	if err == nil {
		err = perr
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		return sum, nil, fmt.Errorf("generate capture: %w", err)
	}
	return sum, t, nil
}

// decodeRun is one measured pass over the capture.
type decodeRun struct {
	packets, bytes, calls int64
	sum                   uint64 // order-independent hash of the calls found
	elapsed, cpu          time.Duration
	mallocs               uint64
	peakRSSKiB            int64
	parseErrors           uint64
}

// measure runs f with GOMAXPROCS=1 (one core), recording wall and CPU
// time, allocations and peak RSS. CPU profile samples of f (and of the
// goroutines it starts) carry the label bench=label.
func measure(r *decodeRun, label string, f func() error) error {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	resetPeakRSS()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	c0, err := procCPU(os.Getpid())
	if err != nil {
		return err
	}
	start := time.Now()
	pprof.Do(context.Background(), pprof.Labels("bench", label), func(context.Context) { err = f() })
	if err != nil {
		return err
	}
	r.elapsed = time.Since(start)
	c1, err := procCPU(os.Getpid())
	if err != nil {
		return err
	}
	r.cpu = c1 - c0
	runtime.ReadMemStats(&m1)
	r.mallocs = m1.Mallocs - m0.Mallocs
	r.peakRSSKiB, err = procStatusKiB("self", "VmHWM")
	return err
}

// decodeOurs runs the capture through the agent pipeline, turning calls
// into protos in 1000-call batches as the agent does before shipping.
// collect, when set, receives each call's key (diagnostic pass).
func decodeOurs(path string, seed maphash.Seed, collect func(string)) (decodeRun, error) {
	var r decodeRun
	err := measure(&r, "ours", func() error {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("open capture: %w", err)
		}
		defer f.Close()
		pr, err := pcapgo.NewReader(bufio.NewReaderSize(f, 1<<20))
		if err != nil {
			return fmt.Errorf("read capture: %w", err)
		}
		h := newCallHasher(seed)
		batch := make([]*orbweaverv1.HttpCall, 0, 1000)
		p := pipeline.New(pipeline.DefaultConfig(), func(c *model.HTTPCall) {
			r.calls++
			r.sum += h.sum(c.ClientAddr, c.Method, c.Path, c.Query, c.Status)
			if collect != nil {
				collect(callKey(c.ClientAddr, c.Method, c.Path, c.Query, c.Status))
			}
			batch = append(batch, callconv.ToProto(c))
			if len(batch) == cap(batch) {
				// Shipping is excluded: the batch is handed over and
				// a new one started, as the uplink does.
				batch = make([]*orbweaverv1.HttpCall, 0, 1000)
			}
		})
		lt := pr.LinkType()
		var last time.Time
		for {
			data, ci, err := pr.ZeroCopyReadPacketData()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("read capture: %w", err)
			}
			p.Packet(lt, data, ci.Timestamp)
			r.packets++
			r.bytes += int64(len(data))
			if ci.Timestamp.Sub(last) > time.Second {
				p.Tick(ci.Timestamp)
				last = ci.Timestamp
			}
		}
		p.Close()
		st := p.Stats()
		r.parseErrors = st.HTTPParseErrors + st.DecodeErrors
		return nil
	})
	return r, err
}

// headerOnlyAllocs feeds the first packets of the capture to a pipeline,
// then feeds its pure ACKs (no payload, no SYN/FIN/RST) again, and returns
// the allocations per re-fed ACK: the steady-state header-only path.
func headerOnlyAllocs(path string, limit int) (float64, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("open capture: %w", err)
	}
	defer f.Close()
	pr, err := pcapgo.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return 0, 0, fmt.Errorf("read capture: %w", err)
	}
	type frame struct {
		data []byte
		ts   time.Time
	}
	var frames []frame
	var acks []int
	for len(frames) < limit {
		data, ci, err := pr.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, 0, fmt.Errorf("read capture: %w", err)
		}
		if isPureACK(data) {
			acks = append(acks, len(frames))
		}
		frames = append(frames, frame{data, ci.Timestamp})
	}
	if len(acks) == 0 {
		return 0, 0, errors.New("no pure ACK in the capture")
	}
	lt := pr.LinkType()
	p := pipeline.New(pipeline.DefaultConfig(), func(*model.HTTPCall) {})
	for _, fr := range frames {
		p.Packet(lt, fr.data, fr.ts)
	}
	ts := frames[len(frames)-1].ts
	// Warm up once, then measure.
	for _, i := range acks {
		p.Packet(lt, frames[i].data, ts)
	}
	const passes = 4
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for range passes {
		for _, i := range acks {
			p.Packet(lt, frames[i].data, ts)
		}
	}
	runtime.ReadMemStats(&m1)
	n := passes * len(acks)
	return float64(m1.Mallocs-m0.Mallocs) / float64(n), n, nil
}

// isPureACK reports whether an Ethernet/IPv4/TCP frame carries no payload
// and only the ACK flag.
func isPureACK(b []byte) bool {
	if len(b) < 14+20+20 || binary.BigEndian.Uint16(b[12:]) != 0x0800 {
		return false
	}
	ip := b[14:]
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if ip[9] != 6 || len(ip) < ihl+20 || total > len(ip) {
		return false
	}
	tcp := ip[ihl:total]
	off := int(tcp[12]>>4) * 4
	return tcp[13] == 0x10 && off == len(tcp)
}

// tsharkRun decodes the capture with tshark's HTTP dissector and returns
// the number of responses found, wall and CPU time.
func tsharkRun(ctx context.Context, path string) (int64, time.Duration, time.Duration, error) {
	cmd := exec.CommandContext(ctx, "tshark", "-n", "-r", path, "-Y", "http.response", "-T", "fields", "-e", "http.response.code")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("tshark: %w", err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, 0, fmt.Errorf("tshark: %w", err)
	}
	var n int64
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if len(sc.Bytes()) > 0 {
			n++
		}
	}
	if err := cmd.Wait(); err != nil {
		return n, 0, 0, fmt.Errorf("tshark: %w", err)
	}
	wall := time.Since(start)
	return n, wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// diffTruth returns up to max differences between found calls and the
// truth, and the number of keys that differ.
func diffTruth(t *truth, found map[string]int, limit int) (int, []string) {
	var n int
	var ex []string
	for k, want := range t.keys {
		if got := found[k]; got != want {
			n += abs(want - got)
			if len(ex) < limit {
				ex = append(ex, fmt.Sprintf("want %d got %d: %s", want, got, k))
			}
		}
	}
	for k, got := range found {
		if _, ok := t.keys[k]; !ok {
			n += got
			if len(ex) < limit {
				ex = append(ex, fmt.Sprintf("unexpected %d: %s", got, k))
			}
		}
	}
	return n, ex
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// benchDecode is section 1.
func benchDecode(ctx context.Context, e *env, rep *report) error {
	const sec = "1 decode"
	s := e.cfg.sizes
	path := filepath.Join(e.workDir, "decode.pcap")
	start := time.Now()
	sum, t, err := generateCapture(path, s)
	if err != nil {
		return err
	}
	e.logf("decode: capture of %d packets, %.0f MB, %d exchanges written in %s", sum.Packets, float64(sum.Bytes)/1e6, sum.Exchanges, e.since(start))
	defer os.Remove(path)

	var (
		pps, mbps, cps, apk, rss, cpuShare         []float64
		bpps, brss, ratio, tpps, tratio            []float64
		oursMismatch, baseMismatch, tsharkMismatch []float64
		oursParseErrs, baseErrs                    []float64
		oursDiag, baseDiag                         []string
		tsharkErr                                  error
		tsharkOK                                   = e.cfg.tshark
	)
	if _, err := exec.LookPath("tshark"); err != nil {
		tsharkOK = false
	}
	for run := range e.cfg.runs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		o, err := decodeOurs(path, t.seed, nil)
		if err != nil {
			return fmt.Errorf("ours: %w", err)
		}
		b, err := decodeBaseline(path, t.seed, nil)
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		e.logf("decode run %d: ours %.0f pkt/s (%d calls, %s), baseline %.0f pkt/s (%d calls, %s)", run+1,
			float64(o.packets)/o.elapsed.Seconds(), o.calls, o.elapsed.Round(time.Millisecond),
			float64(b.packets)/b.elapsed.Seconds(), b.calls, b.elapsed.Round(time.Millisecond))
		opps := float64(o.packets) / o.elapsed.Seconds()
		pps = append(pps, opps)
		mbps = append(mbps, float64(o.bytes)/o.elapsed.Seconds()/1e6)
		cps = append(cps, float64(o.calls)/o.elapsed.Seconds())
		apk = append(apk, float64(o.mallocs)/float64(o.packets))
		rss = append(rss, float64(o.peakRSSKiB)/1024)
		cpuShare = append(cpuShare, o.cpu.Seconds()/o.elapsed.Seconds())
		oursParseErrs = append(oursParseErrs, float64(o.parseErrors))
		bp := float64(b.packets) / b.elapsed.Seconds()
		bpps = append(bpps, bp)
		brss = append(brss, float64(b.peakRSSKiB)/1024)
		ratio = append(ratio, opps/bp)
		baseErrs = append(baseErrs, float64(b.parseErrors))
		oursMismatch = append(oursMismatch, mismatch(t, o.calls, o.sum))
		baseMismatch = append(baseMismatch, mismatch(t, b.calls, b.sum))
		if run == 0 {
			if oursMismatch[0] != 0 {
				oursDiag = diagnose(t, func(c func(string)) error { _, err := decodeOurs(path, t.seed, c); return err })
			}
			if baseMismatch[0] != 0 {
				baseDiag = diagnose(t, func(c func(string)) error { _, err := decodeBaseline(path, t.seed, c); return err })
			}
		}
		// tshark is slow (minutes for the full capture): one run.
		if tsharkOK && run == 0 {
			n, wall, _, err := tsharkRun(ctx, path)
			if err != nil {
				tsharkErr = err
			} else {
				tp := float64(sum.Packets) / wall.Seconds()
				tpps = append(tpps, tp)
				tratio = append(tratio, opps/tp)
				tsharkMismatch = append(tsharkMismatch, float64(abs(int(n-t.calls))))
				e.logf("decode: tshark %.0f pkt/s, %d responses in %s", tp, n, wall.Round(time.Millisecond))
			}
		}
	}
	ha, nacks, err := headerOnlyAllocs(path, 50_000)
	if err != nil {
		return err
	}
	input := fmt.Sprintf("%d packets, %.0f MB, %d calls", sum.Packets, float64(sum.Bytes)/1e6, t.calls)
	rep.add(sec, "ours packets/s (GOMAXPROCS=1)", "pkt/s", pps, atLeast(2_000_000), input)
	rep.add(sec, "ours MB/s", "MB/s", mbps, nil, "")
	rep.add(sec, "ours calls/s", "calls/s", cps, nil, "incl. callconv.ToProto into 1000-call batches")
	rep.add(sec, "ours allocs/packet (all packets)", "allocs", apk, nil, "includes per-call allocations")
	rep.add(sec, "ours allocs/packet (header-only, steady state)", "allocs", []float64{ha}, below(0.001), fmt.Sprintf("%d pure ACKs re-fed after warm-up", nacks))
	rep.add(sec, "ours peak RSS", "MiB", rss, nil, "whole bench process, VmHWM reset before the run")
	rep.add(sec, "ours process CPU / wall", "cores", cpuShare, nil, "GC threads may exceed 1")
	rep.add(sec, "ours calls ≠ ground truth", "calls", oursMismatch, below(1), joinDiag(oursDiag))
	rep.add(sec, "ours parse+decode errors", "count", oursParseErrs, nil, "")
	rep.add(sec, "baseline packets/s (gopacket tcpassembly + net/http)", "pkt/s", bpps, nil, "")
	rep.add(sec, "baseline peak RSS", "MiB", brss, nil, "")
	rep.add(sec, "baseline calls ≠ ground truth", "calls", baseMismatch, below(1), joinDiag(baseDiag))
	rep.add(sec, "baseline read errors", "count", baseErrs, nil, "")
	rep.add(sec, "ours / baseline (same run, same file)", "×", ratio, atLeast(5), "")
	switch {
	case tsharkErr != nil:
		rep.add(sec, "tshark packets/s", "pkt/s", nil, nil, "failed: "+tsharkErr.Error())
	case len(tpps) > 0:
		rep.add(sec, "tshark packets/s (1 run)", "pkt/s", tpps, nil, "tshark -Y http.response, wall time")
		rep.add(sec, "ours / tshark", "×", tratio, nil, "")
		rep.add(sec, "tshark responses ≠ ground truth", "calls", tsharkMismatch, nil, "count difference only")
	default:
		rep.add(sec, "tshark packets/s", "pkt/s", nil, nil, "tshark not installed or -tshark=false")
	}
	return nil
}

// mismatch estimates how many calls differ from the truth: the count
// difference, or 1 when counts agree but the hashes do not.
func mismatch(t *truth, calls int64, sum uint64) float64 {
	d := calls - t.calls
	if d < 0 {
		d = -d
	}
	if d == 0 && sum != t.sum {
		return 1
	}
	return float64(d)
}

// diagnose reruns a decoder collecting keys and lists differences.
func diagnose(t *truth, run func(func(string)) error) []string {
	found := make(map[string]int)
	var mu sync.Mutex // the baseline reports from several goroutines
	if err := run(func(k string) { mu.Lock(); found[k]++; mu.Unlock() }); err != nil {
		return []string{"diagnostic pass failed: " + err.Error()}
	}
	n, ex := diffTruth(t, found, 3)
	return append([]string{strconv.Itoa(n) + " differing"}, ex...)
}

func joinDiag(d []string) string {
	if len(d) == 0 {
		return ""
	}
	s := d[0]
	for _, x := range d[1:] {
		s += "; " + x
	}
	return s
}
