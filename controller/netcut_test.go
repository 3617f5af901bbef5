package controller_test

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/orbweaver/orbweaver/agent"
	"github.com/orbweaver/orbweaver/internal/pcapgen"
	"github.com/orbweaver/orbweaver/internal/pgtest"
)

// cutProxy forwards TCP connections to a target until cut: then every
// connection it holds goes silent (bytes are swallowed, nothing is closed,
// as when a cable is pulled) until restored; connections opened after
// restore work.
type cutProxy struct {
	lis    net.Listener
	target string

	mu    sync.Mutex
	epoch int // connections of an older epoch than the current are dead
	cut   bool
	conns []net.Conn
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{lis: lis, target: target}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) addr() string { return p.lis.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		epoch := p.epoch
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go p.pipe(c, u, epoch)
		go p.pipe(u, c, epoch)
	}
}

// pipe copies while the connection's epoch is alive and the proxy is not
// cut; otherwise it reads and drops.
func (p *cutProxy) pipe(dst, src net.Conn, epoch int) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			alive := !p.cut && epoch == p.epoch
			p.mu.Unlock()
			if alive {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// cutNow silences every connection open now, for good.
func (p *cutProxy) cutNow() {
	p.mu.Lock()
	p.cut = true
	p.epoch++
	p.mu.Unlock()
}

func (p *cutProxy) restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

func (p *cutProxy) close() {
	p.lis.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// TestNetworkCutExactlyOnce cuts the network between agent and controller
// without closing anything: the agent notices through keepalive pings,
// reconnects once the network is back, resends what was not acknowledged,
// and every call is stored once.
func TestNetworkCutExactlyOnce(t *testing.T) {
	e := startController(t, pgtest.URL(t), "")
	proxy := startCutProxy(t, e.addr)
	pcap, sum := volumePcap(t, pcapgen.VolumeSpec{Connections: 400, ExchangesPerConn: 50, Seed: 13})
	r := startAgent(t, agent.Config{Controller: proxy.addr(), Name: "cut", File: pcap, ExitWhenDone: true, Keepalive: 5 * time.Second})
	waitFor(t, 60*time.Second, "first calls stored", func() bool { return e.count(t, "") > 0 })
	proxy.cutNow()
	time.Sleep(2 * time.Second)
	mid := e.count(t, "")
	proxy.restore()
	select {
	case err := <-r.done:
		r.cancel = nil
		if err != nil {
			t.Fatalf("agent: %v", err)
		}
	case <-time.After(120 * time.Second):
		t.Fatalf("agent did not finish; uplink %+v", r.a.Stats().Uplink)
	}
	if n := e.count(t, ""); n != sum.Exchanges {
		t.Fatalf("stored %d calls, want exactly %d; uplink %+v", n, sum.Exchanges, r.a.Stats().Uplink)
	}
	up := r.a.Stats().Uplink
	if up.Reconnects < 1 || mid >= sum.Exchanges {
		t.Fatalf("the cut did not interrupt the upload: %d stored during the cut; uplink %+v", mid, up)
	}
	t.Logf("%d of %d stored when the network was cut; uplink %+v", mid, sum.Exchanges, up)
}
