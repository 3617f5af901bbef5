package pcapgen

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// VolumeSpec describes bulk HTTP/1.1 keep-alive traffic for GenerateHTTP.
// Zero fields take the defaults noted.
type VolumeSpec struct {
	// Connections is the total number of TCP connections (default 100).
	Connections int
	// ExchangesPerConn is the number of exchanges per connection
	// (default 10).
	ExchangesPerConn int
	// Concurrency is how many connections are open at once (default
	// min(Connections, 64)); when one closes, the next one opens.
	Concurrency int
	// Clients and Servers are the numbers of distinct client and server
	// hosts (defaults 20 and 5).
	Clients, Servers int
	// Seed makes the output reproducible.
	Seed int64
	// ImpairmentRate is the per data segment probability of reordering
	// and, separately, of a spurious retransmission (0: clean capture).
	ImpairmentRate float64
	// IPv6 uses IPv6 addresses for every connection.
	IPv6 bool
	// Start is the time of the first connection (default
	// 2026-01-15T12:00:00Z).
	Start time.Time
	// OnExchange, when set, receives the ground truth of every exchange
	// in the order they are generated (not sorted by time).
	OnExchange func(Truth)
}

// Summary reports what GenerateHTTP wrote.
type Summary struct {
	Packets     int64     `json:"packets"`
	Bytes       int64     `json:"bytes"` // total frame bytes (excluding pcap headers)
	Exchanges   int       `json:"exchanges"`
	Connections int       `json:"connections"`
	First       time.Time `json:"first"` // first frame
	Last        time.Time `json:"last"`  // last frame
}

// volConn is a connection of the volume generator.
type volConn struct {
	c    *Conn
	left int
}

// GenerateHTTP writes a pcap of realistic keep-alive HTTP/1.1 traffic among
// several clients and servers: mixed methods, statuses and body sizes, some
// chunked responses, many connections open at once and interleaved in time.
// Frames are written as soon as no open connection can precede them, so
// memory stays bounded whatever the number of packets.
func GenerateHTTP(w io.Writer, spec VolumeSpec) (Summary, error) {
	spec = spec.withDefaults()
	pw, err := NewWriter(w)
	if err != nil {
		return Summary{}, err
	}
	g := &volumeGen{spec: spec, rng: rand.New(rand.NewPCG(uint64(spec.Seed), 0x6f7262)), w: pw}
	for range spec.Concurrency {
		start := spec.Start.Add(time.Duration(g.rng.Int64N(int64(20 * time.Millisecond))))
		g.push(g.open(start))
	}
	var sum Summary
	for len(g.heap) > 0 {
		vc := g.heap[0]
		if vc.left > 0 {
			t := vc.c.HTTP(g.exchange())
			vc.left--
			sum.Exchanges++
			if spec.OnExchange != nil {
				spec.OnExchange(t)
			}
			vc.c.Advance(g.think())
			g.fix0()
		} else {
			vc.c.Close()
			if g.opened < spec.Connections {
				g.heap[0] = g.open(vc.c.Now().Add(time.Duration(g.rng.Int64N(int64(time.Millisecond)))))
				g.fix0()
			} else {
				g.pop0()
			}
		}
		if len(g.heap) > 0 {
			if err := pw.FlushUntil(g.heap[0].c.Now()); err != nil {
				return sum, err
			}
		}
	}
	if err := pw.Flush(); err != nil {
		return sum, err
	}
	sum.Packets, sum.Bytes, sum.Connections = pw.Packets(), pw.Bytes(), g.opened
	if sum.Packets > 0 {
		sum.First, sum.Last = time.Unix(0, pw.firstTS).UTC(), time.Unix(0, pw.lastTS).UTC()
	}
	return sum, nil
}

func (s VolumeSpec) withDefaults() VolumeSpec {
	if s.Connections <= 0 {
		s.Connections = 100
	}
	if s.ExchangesPerConn <= 0 {
		s.ExchangesPerConn = 10
	}
	if s.Concurrency <= 0 {
		s.Concurrency = 64
	}
	s.Concurrency = min(s.Concurrency, s.Connections)
	if s.Clients <= 0 {
		s.Clients = 20
	}
	if s.Servers <= 0 {
		s.Servers = 5
	}
	if s.Start.IsZero() {
		s.Start = time.Date(2026, time.January, 15, 12, 0, 0, 0, time.UTC)
	}
	return s
}

// volumeGen holds the state of one GenerateHTTP run.
type volumeGen struct {
	spec   VolumeSpec
	rng    *rand.Rand
	w      *Writer
	heap   []*volConn // min-heap by connection clock
	opened int
}

// open starts connection number g.opened.
func (g *volumeGen) open(start time.Time) *volConn {
	i := g.opened
	g.opened++
	ci := i % g.spec.Clients
	si := g.rng.IntN(g.spec.Servers)
	port := uint16(32768 + (i/g.spec.Clients)%28000)
	var client, server netip.Addr
	if g.spec.IPv6 {
		client = netip.AddrFrom16([16]byte{0xfd, 0, 0, 2, 14: byte(ci >> 8), 15: byte(ci) + 1})
		server = netip.AddrFrom16([16]byte{0xfd, 0, 0, 3, 15: byte(si) + 1})
	} else {
		client = netip.AddrFrom4([4]byte{10, 2, byte(ci >> 8), byte(ci) + 1})
		server = netip.AddrFrom4([4]byte{10, 3, 0, byte(si) + 1})
	}
	sport := uint16(8080)
	if si%3 == 2 {
		sport = 80
	}
	opts := ConnOptions{RTT: time.Duration(100+g.rng.IntN(900)) * time.Microsecond}
	if g.spec.ImpairmentRate > 0 {
		opts.Rand = rand.New(rand.NewPCG(uint64(g.spec.Seed), uint64(i)))
		opts.ReorderProb = g.spec.ImpairmentRate
		opts.RetransmitProb = g.spec.ImpairmentRate
	}
	c := g.w.NewConn(netip.AddrPortFrom(client, port), netip.AddrPortFrom(server, sport), start, opts)
	return &volConn{c: c, left: g.spec.ExchangesPerConn}
}

// exchange draws a random exchange.
func (g *volumeGen) exchange() Exchange {
	r := g.rng
	paths := [...]string{"/api/v1/users", "/api/v1/orders", "/api/v1/items", "/api/v1/search", "/api/v2/payments", "/healthz", "/metrics", "/api/v1/sessions"}
	ex := Exchange{Path: paths[r.IntN(len(paths))]}
	switch p := r.IntN(100); {
	case p < 60:
		ex.Method = http.MethodGet
	case p < 80:
		ex.Method, ex.Status = http.MethodPost, http.StatusCreated
	case p < 90:
		ex.Method = http.MethodPut
	case p < 95:
		ex.Method, ex.Status = http.MethodDelete, http.StatusNoContent
	case p < 97:
		ex.Method = http.MethodHead
	default:
		ex.Method = http.MethodPatch
	}
	if ex.Method != http.MethodGet && ex.Method != http.MethodHead && ex.Method != http.MethodDelete {
		ex.ReqBody = 50 + r.IntN(4000)
	}
	resource := strings.HasPrefix(ex.Path, "/api/")
	if resource && (ex.Method != http.MethodPost || r.IntN(4) == 0) {
		ex.Path = fmt.Sprintf("%s/%d", ex.Path, r.IntN(100000))
	}
	if ex.Method == http.MethodGet && resource {
		if r.IntN(10) < 4 {
			ex.Query = fmt.Sprintf("page=%d&limit=%d", r.IntN(50), 10*(1+r.IntN(10)))
		}
	}
	switch p := r.IntN(1000); {
	case p < 30:
		ex.Status = http.StatusNotFound
	case p < 40:
		ex.Status = http.StatusInternalServerError
	case p < 45:
		ex.Status = http.StatusServiceUnavailable
	case p < 55:
		ex.Status = http.StatusBadRequest
	}
	switch p := r.IntN(100); {
	case p < 55:
		ex.RespBody = 20 + r.IntN(2000)
	case p < 85:
		ex.RespBody = 2000 + r.IntN(14000)
	case p < 97:
		ex.RespBody = 16000 + r.IntN(48000)
	default:
		ex.RespBody = 64000 + r.IntN(192000)
	}
	ex.Chunked = r.IntN(100) < 15
	ex.TraceParent = r.IntN(100) < 30
	ex.ServerDelay = time.Duration(200+r.ExpFloat64()*3000) * time.Microsecond
	return ex
}

// think returns the idle time between two exchanges of a connection.
func (g *volumeGen) think() time.Duration {
	return time.Duration(100+g.rng.ExpFloat64()*5000) * time.Microsecond
}

func (g *volumeGen) less(i, j int) bool { return g.heap[i].c.now < g.heap[j].c.now }

func (g *volumeGen) push(v *volConn) {
	g.heap = append(g.heap, v)
	for i := len(g.heap) - 1; i > 0; {
		p := (i - 1) / 2
		if !g.less(i, p) {
			break
		}
		g.heap[i], g.heap[p] = g.heap[p], g.heap[i]
		i = p
	}
}

// fix0 restores the heap after the root's clock moved forward.
func (g *volumeGen) fix0() {
	n := len(g.heap)
	for i := 0; ; {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && g.less(r, l) {
			m = r
		}
		if !g.less(m, i) {
			return
		}
		g.heap[i], g.heap[m] = g.heap[m], g.heap[i]
		i = m
	}
}

// pop0 removes the root.
func (g *volumeGen) pop0() {
	n := len(g.heap) - 1
	g.heap[0] = g.heap[n]
	g.heap[n] = nil
	g.heap = g.heap[:n]
	g.fix0()
}
