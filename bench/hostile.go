package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/orbweaver/orbweaver/agent/pipeline"
	"github.com/orbweaver/orbweaver/internal/model"
)

// hostileResult is what the hostile child prints.
type hostileResult struct {
	PeakRSSKiB      int64          `json:"peak_rss_kib"`
	StartRSSKiB     int64          `json:"start_rss_kib"`
	BudgetMiB       float64        `json:"budget_mib"`       // the pipeline's memory budget
	MaxMemoryMiB    float64        `json:"max_memory_mib"`   // most charged to it (sampled)
	MaxBufferedMiB  float64        `json:"max_buffered_mib"` // of which buffers and pending calls
	HeapInuseMiB    float64        `json:"heap_inuse_mib"`   // at the end, before a GC
	HeapLiveMiB     float64        `json:"heap_live_mib"`    // at the end, after a GC
	Frames          int64          `json:"frames"`
	ElapsedSeconds  float64        `json:"elapsed_seconds"`
	Stats           pipeline.Stats `json:"stats"`
	ChunkedBodySeen int64          `json:"chunked_body_bytes_sent"`
	// The endless response's decoded body: as sent (chunk payloads), and
	// as counted on its call when the pipeline is closed at the end.
	ChunkedPayload int64 `json:"chunked_payload_bytes"`
	ChunkedCounted int64 `json:"chunked_payload_bytes_counted"`
}

// frameBuilder writes Ethernet/IPv4/TCP frames into a reused buffer (TCP
// checksum left zero, as with checksum offload).
type frameBuilder struct{ buf []byte }

const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagPSH = 0x08
	flagACK = 0x10
)

func (fb *frameBuilder) frame(src, dst [4]byte, sport, dport uint16, seq, ack uint32, flags byte, payload []byte) []byte {
	n := 14 + 20 + 20 + len(payload)
	if cap(fb.buf) < n {
		fb.buf = make([]byte, n)
	}
	b := fb.buf[:n]
	clear(b[:54])
	b[12], b[13] = 0x08, 0x00
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+20+len(payload)))
	ip[8], ip[9] = 64, 6
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	tcp := b[34:54]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	copy(b[54:], payload)
	return b
}

// runHostileChild feeds the pipeline (default limits) HostileStreams
// half-open connections, each a SYN, an unterminated request header and a
// segment beyond a hole, all left open, then one endless chunked response
// of HostileChunkBytes, and prints a hostileResult as JSON. memProfile,
// when set, receives a heap profile taken while the pipeline is loaded.
func runHostileChild(ctx context.Context, s sizes, memProfile string, out io.Writer) error {
	runtime.GC()
	var res hostileResult
	var err error
	if res.StartRSSKiB, err = procStatusKiB("self", "VmRSS"); err != nil {
		return err
	}
	cfg := pipeline.DefaultConfig()
	p := pipeline.New(cfg, func(c *model.HTTPCall) {
		if c.Path == "/stream" {
			res.ChunkedCounted = c.ResponseBodySize
		}
	})
	var fb frameBuilder
	ts := time.Now()
	tick := func() { ts = ts.Add(5 * time.Microsecond) }
	server := [4]byte{10, 255, 0, 1}
	var maxBuf, maxMem uint64
	sample := func() {
		st := p.Stats()
		maxBuf, maxMem = max(maxBuf, st.BufferedBytes), max(maxMem, st.MemoryBytes)
	}
	feed := func(f []byte) {
		p.Packet(layers.LinkTypeEthernet, f, ts)
		res.Frames++
		tick()
	}
	pad := bytes.Repeat([]byte("a"), 900)
	hole := bytes.Repeat([]byte("b"), 1000)
	start := time.Now()
	for i := range s.HostileStreams {
		if i%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		client := [4]byte{10, byte(1 + i>>16), byte(i >> 8), byte(i)}
		port := uint16(10000 + i%50000)
		isn := uint32(i) * 7919
		feed(fb.frame(client, server, port, 80, isn, 0, flagSYN, nil))
		feed(fb.frame(server, client, 80, port, 5000, isn+1, flagSYN|flagACK, nil))
		req := "GET /hostile/" + strconv.Itoa(i) + " HTTP/1.1\r\nHost: victim\r\nX-Pad: " + string(pad)
		feed(fb.frame(client, server, port, 80, isn+1, 5001, flagACK|flagPSH, []byte(req)))
		// A segment beyond a 500-byte hole: buffered out of order.
		feed(fb.frame(client, server, port, 80, isn+1+uint32(len(req))+500, 5001, flagACK|flagPSH, hole))
		if i%1024 == 0 {
			sample()
		}
	}
	// One endless chunked response on its own connection.
	client := [4]byte{10, 254, 0, 1}
	const cport = 55555
	feed(fb.frame(client, server, cport, 80, 1, 0, flagSYN, nil))
	feed(fb.frame(server, client, 80, cport, 100, 2, flagSYN|flagACK, nil))
	req := []byte("GET /stream HTTP/1.1\r\nHost: victim\r\n\r\n")
	feed(fb.frame(client, server, cport, 80, 2, 101, flagACK|flagPSH, req))
	cseq := uint32(2 + len(req))
	sseq := uint32(101)
	hdr := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
	feed(fb.frame(server, client, 80, cport, sseq, cseq, flagACK|flagPSH, hdr))
	sseq += uint32(len(hdr))
	chunk := append([]byte("5a0\r\n"), bytes.Repeat([]byte("data: x\n"), 0x5a0/8)...)
	chunk = append(chunk, "\r\n"...)
	var sent int64
	for n := 0; sent < s.HostileChunkBytes; n++ {
		if n%4096 == 0 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			sample()
		}
		feed(fb.frame(server, client, 80, cport, sseq, cseq, flagACK|flagPSH, chunk))
		sseq += uint32(len(chunk))
		sent += int64(len(chunk))
		res.ChunkedPayload += 0x5a0
		if n%16 == 0 {
			feed(fb.frame(client, server, cport, 80, cseq, sseq, flagACK, nil))
		}
	}
	sample()
	res.ChunkedBodySeen = sent
	res.ElapsedSeconds = time.Since(start).Seconds()
	res.Stats = p.Stats()
	res.MaxBufferedMiB = float64(maxBuf) / (1 << 20)
	res.MaxMemoryMiB = float64(maxMem) / (1 << 20)
	res.BudgetMiB = float64(cfg.MaxTotalBufferBytes) / (1 << 20)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapInuseMiB = float64(ms.HeapInuse) / (1 << 20)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	res.HeapLiveMiB = float64(ms.HeapAlloc) / (1 << 20)
	if res.PeakRSSKiB, err = procStatusKiB("self", "VmHWM"); err != nil {
		return err
	}
	if memProfile != "" {
		if err := writeHeapProfile(memProfile); err != nil {
			return err
		}
	}
	p.Close() // emits the endless response's call, truncated
	return json.NewEncoder(out).Encode(res)
}

// benchHostile is section 6: each run is a fresh child process, so its
// peak RSS is the pipeline's alone.
func benchHostile(ctx context.Context, e *env, rep *report) error {
	const sec = "6 hostile"
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	var rss, heap, mem, buf, evicted, evictedMiB, rejected, capDropped, refused, parseErrs, active, chunked, secs []float64
	var budget float64
	for run := range e.cfg.runs {
		cmd := exec.CommandContext(ctx, exe, "-hostile-child", "-size", e.cfg.size)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("hostile child: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		var r hostileResult
		if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
			return fmt.Errorf("hostile child output: %w", err)
		}
		e.logf("hostile run %d: peak RSS %.0f MiB, %d frames in %.1fs, stats %+v", run+1, float64(r.PeakRSSKiB)/1024, r.Frames, r.ElapsedSeconds, r.Stats)
		rss = append(rss, float64(r.PeakRSSKiB)/1024)
		heap = append(heap, r.HeapLiveMiB)
		mem = append(mem, r.MaxMemoryMiB)
		buf = append(buf, r.MaxBufferedMiB)
		budget = r.BudgetMiB
		evicted = append(evicted, float64(r.Stats.EvictedConnections))
		evictedMiB = append(evictedMiB, float64(r.Stats.EvictedBytes)/(1<<20))
		rejected = append(rejected, float64(r.Stats.ConnectionsRejected))
		capDropped = append(capDropped, float64(r.Stats.CapDroppedBytes)/(1<<20))
		refused = append(refused, float64(r.Stats.HTTPMemoryRefused))
		parseErrs = append(parseErrs, float64(r.Stats.HTTPParseErrors))
		active = append(active, float64(r.Stats.ActiveConnections))
		chunked = append(chunked, float64(r.ChunkedCounted)/float64(max(r.ChunkedPayload, 1)))
		secs = append(secs, r.ElapsedSeconds)
	}
	s := e.cfg.sizes
	in := fmt.Sprintf("%d half-open streams + %d MiB chunked body", s.HostileStreams, s.HostileChunkBytes>>20)
	rep.add(sec, "agent pipeline peak RSS (child process)", "MiB", rss, below(256), in+"; default limits")
	rep.add(sec, "live heap at end (after GC)", "MiB", heap, nil, "")
	rep.add(sec, "memory budget (parsing.total_buffer_mib)", "MiB", []float64{budget}, nil, "connections, parsing state, buffers, pending calls")
	rep.add(sec, "max memory charged to the budget", "MiB", mem, nil, "sampled every 1024 streams / 4096 chunks")
	rep.add(sec, "  of which buffers and pending calls", "MiB", buf, nil, "")
	rep.add(sec, "connections tracked at end", "count", active, nil, "")
	rep.add(sec, "connections evicted (memory budget)", "count", evicted, nil, "least recently seen first")
	rep.add(sec, "bytes discarded with evicted connections", "MiB", evictedMiB, nil, "")
	rep.add(sec, "connections rejected (limits)", "count", rejected, nil, "")
	rep.add(sec, "bytes skipped at buffer caps", "MiB", capDropped, nil, "")
	rep.add(sec, "HTTP buffers refused by the budget", "count", refused, nil, "")
	rep.add(sec, "HTTP parse errors (header caps)", "count", parseErrs, nil, "")
	rep.add(sec, "endless chunked body counted / sent", "ratio", chunked, nil, "decoded payload bytes on its call at Close")
	rep.add(sec, "time to feed", "s", secs, nil, "")
	return nil
}
