package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/gopacket/gopacket/tcpassembly"
	"github.com/gopacket/gopacket/tcpassembly/tcpreader"
)

// decodeBaseline is the classic approach the issue compares with: gopacket
// decodes each packet, tcpassembly reassembles, and one goroutine per
// direction reads requests (net/http ReadRequest) and responses
// (ReadResponse, paired with the connection's requests in order). It
// builds no call records beyond their identity hash: the baseline is
// favoured, not handicapped. collect, when set, receives each call's key.
func decodeBaseline(path string, seed maphash.Seed, collect func(string)) (decodeRun, error) {
	var r decodeRun
	err := measure(&r, "baseline", func() error {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("open capture: %w", err)
		}
		defer f.Close()
		pr, err := pcapgo.NewReader(bufio.NewReaderSize(f, 1<<20))
		if err != nil {
			return fmt.Errorf("read capture: %w", err)
		}
		src := gopacket.NewPacketSource(pr, pr.LinkType())
		src.DecodeOptions = gopacket.DecodeOptions{Lazy: true, NoCopy: true}
		fac := &baseFactory{pending: make(map[[2]gopacket.Flow]*baseConn), seed: seed, collect: collect}
		asm := tcpassembly.NewAssembler(tcpassembly.NewStreamPool(fac))
		var last time.Time
		for {
			pkt, err := src.NextPacket()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("read capture: %w", err)
			}
			r.packets++
			r.bytes += int64(len(pkt.Data()))
			nl := pkt.NetworkLayer()
			tcp, ok := pkt.TransportLayer().(*layers.TCP)
			if nl == nil || !ok {
				continue
			}
			ts := pkt.Metadata().Timestamp
			asm.AssembleWithTimestamp(nl.NetworkFlow(), tcp, ts)
			if ts.Sub(last) > time.Second {
				asm.FlushOlderThan(ts.Add(-2 * time.Minute))
				last = ts
			}
		}
		asm.FlushAll()
		done := make(chan struct{})
		go func() { fac.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			return errors.New("stream readers did not finish within 30 s")
		}
		r.calls = fac.calls.Load()
		r.sum = fac.sum.Load()
		r.parseErrors = uint64(fac.errors.Load())
		return nil
	})
	return r, err
}

// baseConn pairs the two directions of a connection.
type baseConn struct {
	client netip.AddrPort
	reqs   chan *http.Request
}

// baseFactory creates one reader goroutine per direction. New is called
// from the assembler's goroutine only.
type baseFactory struct {
	wg      sync.WaitGroup
	pending map[[2]gopacket.Flow]*baseConn // connections with one direction seen
	seed    maphash.Seed
	collect func(string)
	calls   atomic.Int64
	sum     atomic.Uint64
	errors  atomic.Int64
}

func (f *baseFactory) New(netFlow, tcpFlow gopacket.Flow) tcpassembly.Stream {
	rs := tcpreader.NewReaderStream()
	sport := binary.BigEndian.Uint16(tcpFlow.Src().Raw())
	dport := binary.BigEndian.Uint16(tcpFlow.Dst().Raw())
	toServer := dport < sport
	key := [2]gopacket.Flow{netFlow, tcpFlow}
	if !toServer {
		key = [2]gopacket.Flow{netFlow.Reverse(), tcpFlow.Reverse()}
	}
	bc := f.pending[key]
	if bc == nil {
		ip, _ := netip.AddrFromSlice(key[0].Src().Raw())
		bc = &baseConn{
			client: netip.AddrPortFrom(ip.Unmap(), binary.BigEndian.Uint16(key[1].Src().Raw())),
			reqs:   make(chan *http.Request, 1024),
		}
		f.pending[key] = bc
	} else {
		delete(f.pending, key)
	}
	if toServer {
		f.wg.Add(1)
		go f.readRequests(bc, &rs)
		return &rs
	}
	// Responses may arrive before their request is complete (reordered
	// segments): the response bytes go through an unbounded buffer so that
	// the assembler never waits on a reader that waits for a request.
	pipe := newBufPipe()
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		_, _ = io.Copy(pipe, &rs)
		pipe.Close()
	}()
	go f.readResponses(bc, pipe)
	return &rs
}

func (f *baseFactory) readRequests(bc *baseConn, rs *tcpreader.ReaderStream) {
	defer f.wg.Done()
	defer close(bc.reqs)
	br := bufio.NewReader(rs)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				f.errors.Add(1)
			}
			break
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
		bc.reqs <- req
	}
	tcpreader.DiscardBytesToEOF(br)
}

func (f *baseFactory) readResponses(bc *baseConn, rs io.Reader) {
	defer f.wg.Done()
	br := bufio.NewReader(rs)
	h := newCallHasher(f.seed)
	for req := range bc.reqs {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			f.errors.Add(1)
			break
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		f.calls.Add(1)
		f.sum.Add(h.sum(bc.client, req.Method, req.URL.Path, req.URL.RawQuery, resp.StatusCode))
		if f.collect != nil {
			f.collect(callKey(bc.client, req.Method, req.URL.Path, req.URL.RawQuery, resp.StatusCode))
		}
	}
	// Requests never answered are drained so the request reader ends.
	for range bc.reqs {
	}
}

// bufPipe is an unbounded in-memory pipe: Write never blocks.
type bufPipe struct {
	mu     sync.Mutex
	cond   sync.Cond
	buf    []byte
	r      int
	closed bool
}

func newBufPipe() *bufPipe {
	p := &bufPipe{}
	p.cond.L = &p.mu
	return p
}

func (p *bufPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	p.buf = append(p.buf, b...)
	p.mu.Unlock()
	p.cond.Signal()
	return len(b), nil
}

// Close makes Read return io.EOF once the buffer is empty.
func (p *bufPipe) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *bufPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.r == len(p.buf) && !p.closed {
		p.cond.Wait()
	}
	if p.r == len(p.buf) {
		return 0, io.EOF
	}
	n := copy(b, p.buf[p.r:])
	p.r += n
	if p.r == len(p.buf) {
		p.buf, p.r = p.buf[:0], 0
	}
	return n, nil
}
