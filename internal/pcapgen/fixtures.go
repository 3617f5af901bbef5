package pcapgen

//go:generate go run ./cmd/pcapgen -fixtures ../../testdata/pcaps

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// fixtureEpoch returns the start time of every fixture capture.
func fixtureEpoch() time.Time { return time.Date(2026, time.January, 15, 10, 0, 0, 0, time.UTC) }

// Fixture is one reproducible capture of testdata/pcaps.
type Fixture struct {
	// Name is the file name without extension: <Name>.pcap and
	// <Name>.truth.json.
	Name string
	// Description says what the capture contains.
	Description string
	// Build returns the pcap bytes and the ground truth.
	Build func() ([]byte, []Truth, error)
}

// Fixtures returns the project's fixture captures, in a stable order.
func Fixtures() []Fixture {
	return []Fixture{
		{"http_keepalive", "3 connections x 10 keep-alive exchanges, GET/POST/PUT/DELETE, statuses 200/201/204/404/500, query strings (30 exchanges)", buildKeepalive},
		{"http_impaired", "2 connections x 10 exchanges with reordering and spurious retransmissions, no loss (20 exchanges)", buildImpaired},
		{"http_chunked", "1 connection, 6 exchanges with chunked responses (2 with chunked request bodies)", buildChunked},
		{"http_pipelined", "1 connection, 2 rounds of 3 pipelined requests then their 3 responses (6 exchanges)", buildPipelined},
		{"http_no_response", "2 connections: 2 exchanges then a request answered by a server RST; a request followed by a client RST (4 requests, 2 without response)", buildNoResponse},
		{"http_midstream", "no handshake: starts inside a response body (not in truth), then 5 full exchanges", buildMidstream},
		{"http_loss", "1 connection, 4 exchanges; one segment inside the 3rd response body missing from the capture", buildLoss},
		{"http_ipv6", "2 IPv6 connections x 5 exchanges (10 exchanges)", buildIPv6},
		{"truncated", "http_keepalive.pcap cut inside a packet record; truth lists the exchanges complete before the cut", buildTruncated},
	}
}

// WriteFixtures builds every fixture and writes <name>.pcap and
// <name>.truth.json into dir.
func WriteFixtures(dir string) error {
	for _, f := range Fixtures() {
		pcap, truth, err := f.Build()
		if err != nil {
			return fmt.Errorf("build fixture %s: %w", f.Name, err)
		}
		js, err := MarshalTruth(truth)
		if err != nil {
			return fmt.Errorf("fixture %s: %w", f.Name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.Name+".pcap"), pcap, 0o644); err != nil {
			return fmt.Errorf("write fixture: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.Name+".truth.json"), js, 0o644); err != nil {
			return fmt.Errorf("write fixture truth: %w", err)
		}
	}
	return nil
}

// MarshalTruth encodes truths as an indented JSON array with a trailing
// newline (an empty slice gives "[]").
func MarshalTruth(truth []Truth) ([]byte, error) {
	if truth == nil {
		truth = []Truth{}
	}
	b, err := json.MarshalIndent(truth, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("marshal truth: %w", err)
	}
	return append(b, '\n'), nil
}

// sortTruth orders truths by request time (then client port) so files read
// naturally.
func sortTruth(ts []Truth) {
	slices.SortStableFunc(ts, func(a, b Truth) int {
		if c := a.RequestTime.Compare(b.RequestTime); c != 0 {
			return c
		}
		return a.ClientPort - b.ClientPort
	})
}

// ap parses an address:port literal; fixtures only use valid literals.
func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// mixedExchange returns the i-th exchange of a deterministic mix of
// methods, statuses, query strings and body sizes.
func mixedExchange(conn, i int, host string) Exchange {
	type row struct {
		method, path, query string
		status, req, resp   int
		trace               bool
	}
	rows := []row{
		{http.MethodGet, "/api/v1/users", "page=1&limit=20", 200, 0, 1800, true},
		{http.MethodPost, "/api/v1/users", "", 201, 420, 310, false},
		{http.MethodGet, "/api/v1/users/42", "fields=name,email", 200, 0, 640, false},
		{http.MethodPut, "/api/v1/users/42", "", 200, 380, 350, true},
		{http.MethodGet, "/api/v1/orders", "status=open&sort=-created", 200, 0, 4200, false},
		{http.MethodDelete, "/api/v1/orders/7", "", 204, 0, 0, false},
		{http.MethodGet, "/api/v1/missing", "q=x", 404, 0, 90, false},
		{http.MethodPost, "/api/v1/payments", "idempotency=abc", 500, 760, 120, true},
		{http.MethodGet, "/healthz", "", 200, 0, 15, false},
		{http.MethodGet, "/api/v1/search", "q=blue+shoes&page=2", 200, 0, 2900, false},
	}
	r := rows[(i+conn*3)%len(rows)]
	return Exchange{
		Method: r.method, Path: r.path, Query: r.query, Host: host, Status: r.status,
		ReqBody: r.req, RespBody: r.resp + conn*37, TraceParent: r.trace,
		ServerDelay: time.Duration(300+((i*7+conn*13)%20)*100) * time.Microsecond,
	}
}

// fixtureConn is one connection of a multi-connection fixture.
type fixtureConn struct {
	client, server string
	host           string
	n              int
	opts           ConnOptions
}

// buildConns runs n exchanges on each connection, interleaved in time, and
// closes them.
func buildConns(specs []fixtureConn) ([]byte, []Truth, error) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf)
	if err != nil {
		return nil, nil, err
	}
	conns := make([]*Conn, len(specs))
	done := make(map[*Conn]int, len(specs))
	idx := make(map[*Conn]int, len(specs))
	for i, s := range specs {
		start := fixtureEpoch().Add(time.Duration(i) * 1700 * time.Microsecond)
		conns[i] = w.NewConn(ap(s.client), ap(s.server), start, s.opts)
		idx[conns[i]] = i
	}
	var truth []Truth
	err = w.Interleave(conns, func(c *Conn) bool {
		i := idx[c]
		s := specs[i]
		k := done[c]
		if k == s.n {
			c.Close()
			return false
		}
		truth = append(truth, c.HTTP(mixedExchange(i, k, s.host)))
		done[c] = k + 1
		c.Advance(time.Duration(800+((k*11+i*5)%9)*450) * time.Microsecond) // think time
		return true
	})
	if err != nil {
		return nil, nil, err
	}
	if err := w.Flush(); err != nil {
		return nil, nil, err
	}
	sortTruth(truth)
	return buf.Bytes(), truth, nil
}

func buildKeepalive() ([]byte, []Truth, error) {
	return buildConns([]fixtureConn{
		{client: "127.0.0.1:51234", server: "127.0.0.1:8080", host: "localhost:8080", n: 10},
		{client: "10.1.0.21:40112", server: "10.1.0.5:8080", host: "users.internal:8080", n: 10},
		{client: "10.1.0.22:38920", server: "10.1.0.6:8080", host: "orders.internal:8080", n: 10},
	})
}

func buildImpaired() ([]byte, []Truth, error) {
	imp := func(seed uint64) ConnOptions {
		return ConnOptions{
			Rand:        rand.New(rand.NewPCG(seed, 0x0bea7e4)),
			ReorderProb: 0.25, RetransmitProb: 0.15,
			MSS: 536, // small segments: more segments to impair
		}
	}
	return buildConns([]fixtureConn{
		{client: "10.1.0.31:41000", server: "10.1.0.5:8080", host: "users.internal:8080", n: 10, opts: imp(1)},
		{client: "10.1.0.32:41001", server: "10.1.0.6:8080", host: "orders.internal:8080", n: 10, opts: imp(2)},
	})
}

func buildIPv6() ([]byte, []Truth, error) {
	return buildConns([]fixtureConn{
		{client: "[fd00:1::21]:45001", server: "[fd00:1::5]:8080", host: "[fd00:1::5]:8080", n: 5},
		{client: "[2001:db8::7]:45002", server: "[2001:db8::80]:8080", host: "api.example.test:8080", n: 5},
	})
}

// single builds a one-connection fixture with body run on the connection.
func single(client, server string, opts ConnOptions, body func(c *Conn) []Truth) ([]byte, []Truth, error) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf)
	if err != nil {
		return nil, nil, err
	}
	c := w.NewConn(ap(client), ap(server), fixtureEpoch(), opts)
	truth := body(c)
	if err := w.Flush(); err != nil {
		return nil, nil, err
	}
	sortTruth(truth)
	return buf.Bytes(), truth, nil
}

func buildChunked() ([]byte, []Truth, error) {
	return single("10.1.0.41:42000", "10.1.0.7:8080", ConnOptions{}, func(c *Conn) []Truth {
		var ts []Truth
		for i, size := range []int{12000, 350, 5000, 1, 20000, 9000} {
			ex := Exchange{Path: "/stream/export", Query: fmt.Sprintf("part=%d", i), Host: "export.internal:8080", RespBody: size, Chunked: true, ChunkSize: 1000 + 700*i}
			if i%3 == 1 {
				ex.Method, ex.ReqBody, ex.ReqChunked, ex.Status = http.MethodPost, 2500+i*100, true, http.StatusCreated
			}
			ts = append(ts, c.HTTP(ex))
			c.Advance(2 * time.Millisecond)
		}
		c.Close()
		return ts
	})
}

func buildPipelined() ([]byte, []Truth, error) {
	return single("10.1.0.42:42100", "10.1.0.8:8080", ConnOptions{}, func(c *Conn) []Truth {
		var ts []Truth
		for round := range 2 {
			var exs []Exchange
			var pending []Truth
			for i := range 3 {
				ex, t := c.Request(Exchange{Path: fmt.Sprintf("/items/%d", round*3+i), Query: "view=full", Host: "items.internal:8080", RespBody: 300 + 900*i})
				exs = append(exs, ex)
				pending = append(pending, t)
				c.Advance(50 * time.Microsecond)
			}
			c.Advance(time.Millisecond)
			for i := range exs {
				ts = append(ts, c.Response(exs[i], pending[i]))
			}
			c.Advance(3 * time.Millisecond)
		}
		c.Close()
		return ts
	})
}

func buildNoResponse() ([]byte, []Truth, error) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf)
	if err != nil {
		return nil, nil, err
	}
	var ts []Truth
	a := w.NewConn(ap("10.1.0.51:43000"), ap("10.1.0.9:8080"), fixtureEpoch(), ConnOptions{})
	ts = append(ts, a.HTTP(Exchange{Path: "/api/v1/jobs", Host: "jobs.internal:8080", RespBody: 700}))
	a.Advance(time.Millisecond)
	ts = append(ts, a.HTTP(Exchange{Method: http.MethodPost, Path: "/api/v1/jobs", Host: "jobs.internal:8080", ReqBody: 300, Status: http.StatusCreated, RespBody: 120}))
	a.Advance(time.Millisecond)
	_, t := a.Request(Exchange{Path: "/api/v1/jobs/9/logs", Query: "tail=100", Host: "jobs.internal:8080"})
	ts = append(ts, t)
	a.Advance(5 * time.Millisecond)
	a.Reset(false)

	b := w.NewConn(ap("10.1.0.52:43001"), ap("10.1.0.9:8080"), fixtureEpoch().Add(2*time.Millisecond), ConnOptions{})
	_, t = b.Request(Exchange{Method: http.MethodPut, Path: "/api/v1/jobs/9", Host: "jobs.internal:8080", ReqBody: 2000})
	ts = append(ts, t)
	b.Advance(30 * time.Millisecond)
	b.Reset(true)
	if err := w.Flush(); err != nil {
		return nil, nil, err
	}
	sortTruth(ts)
	return buf.Bytes(), ts, nil
}

func buildMidstream() ([]byte, []Truth, error) {
	return single("10.1.0.61:44000", "10.1.0.10:8080", ConnOptions{NoHandshake: true}, func(c *Conn) []Truth {
		// The tail of a response whose headers were sent before the
		// capture started.
		c.Server(appendFiller(nil, 3000, 'r')[500:])
		c.Advance(2 * time.Millisecond)
		var ts []Truth
		for i := range 5 {
			ts = append(ts, c.HTTP(mixedExchange(0, i, "catalog.internal:8080")))
			c.Advance(time.Millisecond)
		}
		c.Close()
		return ts
	})
}

func buildLoss() ([]byte, []Truth, error) {
	return single("10.1.0.71:44100", "10.1.0.11:8080", ConnOptions{}, func(c *Conn) []Truth {
		var ts []Truth
		for i := range 4 {
			ex := Exchange{Path: "/reports/" + fmt.Sprint(i), Host: "reports.internal:8080", RespBody: 1000 + 2500*i}
			if i == 2 {
				// Request, then lose the 3rd response segment (bytes
				// 2920..4379, inside the 6000-byte body).
				ex, t := c.Request(ex)
				c.Advance(ex.ServerDelay)
				c.LoseSegment(2)
				ts = append(ts, c.Response(ex, t))
			} else {
				ts = append(ts, c.HTTP(ex))
			}
			c.Advance(time.Millisecond)
		}
		c.Close()
		return ts
	})
}

// pcap file layout constants.
const (
	pcapFileHeaderLen   = 24
	pcapRecordHeaderLen = 16
)

// pcapRecord locates one record of a classic pcap file.
type pcapRecord struct {
	offset int   // of the record header
	ts     int64 // Unix nanoseconds (nanosecond files only)
	size   int   // captured length
}

// pcapRecords lists the records of a little-endian nanosecond pcap.
func pcapRecords(b []byte) ([]pcapRecord, error) {
	if len(b) < pcapFileHeaderLen || binary.LittleEndian.Uint32(b) != 0xa1b23c4d {
		return nil, errors.New("pcapgen: not a little-endian nanosecond pcap")
	}
	var recs []pcapRecord
	for off := pcapFileHeaderLen; off < len(b); {
		if off+pcapRecordHeaderLen > len(b) {
			return recs, fmt.Errorf("pcapgen: record header at %d truncated", off)
		}
		h := b[off:]
		sec, nsec := binary.LittleEndian.Uint32(h[0:4]), binary.LittleEndian.Uint32(h[4:8])
		n := int(binary.LittleEndian.Uint32(h[8:12]))
		recs = append(recs, pcapRecord{offset: off, ts: int64(sec)*1e9 + int64(nsec), size: n})
		off += pcapRecordHeaderLen + n
		if off > len(b) {
			return recs, fmt.Errorf("pcapgen: record at %d truncated", recs[len(recs)-1].offset)
		}
	}
	return recs, nil
}

// Truncate cuts a pcap inside the data of its record number index (keeping
// its header and keep bytes of its data) and returns the cut file together
// with the truths whose response (or, without response, request) ended in an
// earlier record.
func Truncate(pcap []byte, truth []Truth, index, keep int) ([]byte, []Truth, error) {
	recs, err := pcapRecords(pcap)
	if err != nil {
		return nil, nil, fmt.Errorf("truncate: %w", err)
	}
	if index < 0 || index >= len(recs) || keep <= 0 || keep >= recs[index].size {
		return nil, nil, fmt.Errorf("truncate: cut %d/%d outside %d records", index, keep, len(recs))
	}
	cut := recs[index]
	if index > 0 && recs[index-1].ts == cut.ts {
		return nil, nil, fmt.Errorf("truncate: record %d shares its timestamp with the previous one", index)
	}
	var kept []Truth
	for _, t := range truth {
		end := t.ResponseEndTime
		if end.IsZero() {
			end = t.RequestEndTime
		}
		if end.UnixNano() < cut.ts {
			kept = append(kept, t)
		}
	}
	out := slices.Clone(pcap[:cut.offset+pcapRecordHeaderLen+keep])
	return out, kept, nil
}

func buildTruncated() ([]byte, []Truth, error) {
	pcap, truth, err := buildKeepalive()
	if err != nil {
		return nil, nil, err
	}
	recs, err := pcapRecords(pcap)
	if err != nil {
		return nil, nil, err
	}
	i := len(recs) / 2
	for i > 1 && recs[i-1].ts == recs[i].ts {
		i++
	}
	return Truncate(pcap, truth, i, recs[i].size/2)
}
