package http1

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/orbweaver/orbweaver/internal/model"

	"github.com/orbweaver/orbweaver/agent/membudget"
)

var (
	cliAddr = netip.MustParseAddrPort("10.0.0.1:40000")
	srvAddr = netip.MustParseAddrPort("10.0.0.2:80")
	t0      = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
)

// step is one input to a Conn: data from a side, a gap, or an end.
type step struct {
	side int
	data string
	gap  int
	end  bool
}

func c2s(s string) step { return step{side: 0, data: s} }
func s2c(s string) step { return step{side: 1, data: s} }

// harness feeds steps to a Conn and collects calls.
type harness struct {
	ctr   Counters
	opts  Options
	conn  *Conn
	calls []*model.HTTPCall
}

func newHarness(syn bool) *harness {
	h := &harness{}
	h.opts = DefaultOptions(&h.ctr)
	h.conn = NewConn(&h.opts, cliAddr, srvAddr, func(c *model.HTTPCall) { h.calls = append(h.calls, c) })
	if syn {
		h.conn.SYN(0, false)
		h.conn.SYN(1, true)
	}
	return h
}

// run feeds steps, splitting every data step at split (when inside it), and
// closes the connection. Step i happens at t0 + i ms.
func (h *harness) run(steps []step, split int) {
	for i, s := range steps {
		ts := t0.Add(time.Duration(i) * time.Millisecond)
		switch {
		case s.end:
			h.conn.End(s.side, ts)
		case s.gap > 0:
			h.conn.Gap(s.side, s.gap, ts)
		case split > 0 && split < len(s.data):
			b := []byte(s.data)
			h.conn.Data(s.side, b[:split], ts)
			clear(b[:split]) // input buffers are reused: the parser must not keep them
			h.conn.Data(s.side, b[split:], ts)
		default:
			h.conn.Data(s.side, []byte(s.data), ts)
		}
	}
	h.conn.Close(t0.Add(time.Hour))
}

// strip removes addresses and times, compared separately.
func strip(c model.HTTPCall) model.HTTPCall {
	c.ClientAddr, c.ServerAddr = netip.AddrPort{}, netip.AddrPort{}
	c.RequestStart, c.RequestEnd, c.ResponseStart, c.ResponseEnd = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return c
}

const (
	getReq   = "GET /a?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\n\r\n"
	okResp   = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
	chunked  = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
	postReq  = "POST /p HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
	notFound = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
)

func TestConn(t *testing.T) {
	getCall := model.HTTPCall{Method: "GET", Host: "example.com", Path: "/a", Query: "x=1", HTTPVersion: "1.1", Status: 200,
		RequestHeaderSize: int64(len(getReq)), ResponseHeaderSize: int64(len(okResp) - 5), ResponseBodySize: 5,
		ResponseContentType: "text/plain", UserAgent: "t/1", ParseStatus: model.StatusOK}
	tests := []struct {
		name      string
		syn       bool
		steps     []step
		want      []model.HTTPCall
		parseErrs uint64
		nonHTTP   bool
	}{
		{name: "keep-alive content-length", syn: true,
			steps: []step{c2s(getReq), s2c(okResp), c2s(postReq), s2c(notFound)},
			want: []model.HTTPCall{getCall, {Method: "POST", Host: "h", Path: "/p", HTTPVersion: "1.1", Status: 404,
				RequestHeaderSize: int64(len(postReq) - 7), RequestBodySize: 7, ResponseHeaderSize: int64(len(notFound)),
				RequestContentType: "application/json", ParseStatus: model.StatusOK}}},
		{name: "chunked response with extension and trailers", syn: true,
			steps: []step{c2s(getReq), s2c(chunked)},
			want: []model.HTTPCall{{Method: "GET", Host: "example.com", Path: "/a", Query: "x=1", HTTPVersion: "1.1", Status: 200,
				RequestHeaderSize: int64(len(getReq)), ResponseHeaderSize: 47, ResponseBodySize: 11, UserAgent: "t/1", ParseStatus: model.StatusOK}}},
		{name: "chunked request",
			steps: []step{c2s("PUT /u HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), s2c(notFound)},
			want: []model.HTTPCall{{Method: "PUT", Path: "/u", HTTPVersion: "1.1", Status: 404, RequestHeaderSize: 47, RequestBodySize: 3,
				ResponseHeaderSize: int64(len(notFound)), ParseStatus: model.StatusOK}}},
		{name: "close-delimited response ends at FIN", syn: true,
			steps: []step{c2s("GET / HTTP/1.0\r\n\r\n"), s2c("HTTP/1.0 200 OK\r\n\r\nbody bytes"), s2c(" more"), {side: 1, end: true}},
			want: []model.HTTPCall{{Method: "GET", Path: "/", HTTPVersion: "1.0", Status: 200, RequestHeaderSize: 18,
				ResponseHeaderSize: 19, ResponseBodySize: 15, ParseStatus: model.StatusOK}}},
		{name: "close-delimited response ends at Close", syn: true,
			steps: []step{c2s("GET / HTTP/1.0\r\n\r\n"), s2c("HTTP/1.0 200 OK\r\n\r\nbody")},
			want: []model.HTTPCall{{Method: "GET", Path: "/", HTTPVersion: "1.0", Status: 200, RequestHeaderSize: 18,
				ResponseHeaderSize: 19, ResponseBodySize: 4, ParseStatus: model.StatusOK}}},
		{name: "HEAD, 204 and 304 have no body", syn: true,
			steps: []step{c2s("HEAD /h HTTP/1.1\r\n\r\nGET /n HTTP/1.1\r\n\r\nGET /m HTTP/1.1\r\n\r\n"),
				s2c("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"),
				c2s(getReq), s2c(okResp)},
			want: []model.HTTPCall{
				{Method: "HEAD", Path: "/h", HTTPVersion: "1.1", Status: 200, RequestHeaderSize: 20, ResponseHeaderSize: 39, ParseStatus: model.StatusOK},
				{Method: "GET", Path: "/n", HTTPVersion: "1.1", Status: 204, RequestHeaderSize: 19, ResponseHeaderSize: 27, ParseStatus: model.StatusOK},
				{Method: "GET", Path: "/m", HTTPVersion: "1.1", Status: 304, RequestHeaderSize: 19, ResponseHeaderSize: 48, ParseStatus: model.StatusOK},
				getCall}},
		{name: "pipelining matches in order", syn: true,
			steps: []step{c2s(getReq + postReq + getReq), s2c(okResp + notFound), s2c(okResp)},
			want: []model.HTTPCall{getCall, {Method: "POST", Host: "h", Path: "/p", HTTPVersion: "1.1", Status: 404,
				RequestHeaderSize: int64(len(postReq) - 7), RequestBodySize: 7, ResponseHeaderSize: int64(len(notFound)),
				RequestContentType: "application/json", ParseStatus: model.StatusOK}, getCall}},
		{name: "expect 100-continue", syn: true,
			steps: []step{c2s("POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"), s2c("HTTP/1.1 100 Continue\r\n\r\n"),
				c2s("abc"), s2c(notFound)},
			want: []model.HTTPCall{{Method: "POST", Path: "/e", HTTPVersion: "1.1", Status: 404, RequestHeaderSize: 61, RequestBodySize: 3,
				ResponseHeaderSize: int64(len(notFound)), ParseStatus: model.StatusOK}}},
		{name: "101 switching protocols stops parsing", syn: true,
			steps: []step{c2s("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
				s2c("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"), c2s("GET /not-http HTTP/1.1\r\n\r\n")},
			want: []model.HTTPCall{{Method: "GET", Path: "/ws", HTTPVersion: "1.1", Status: 101, RequestHeaderSize: 61,
				ResponseHeaderSize: 56, ParseStatus: model.StatusUpgraded}}},
		{name: "no response at close", syn: true,
			steps: []step{c2s(getReq), s2c(okResp), c2s(postReq)},
			want: []model.HTTPCall{getCall, {Method: "POST", Host: "h", Path: "/p", HTTPVersion: "1.1",
				RequestHeaderSize: int64(len(postReq) - 7), RequestBodySize: 7, RequestContentType: "application/json", ParseStatus: model.StatusNoResponse}}},
		{name: "request cut by close is truncated", syn: true,
			steps: []step{c2s(postReq[:len(postReq)-2])},
			want: []model.HTTPCall{{Method: "POST", Host: "h", Path: "/p", HTTPVersion: "1.1",
				RequestHeaderSize: int64(len(postReq) - 7), RequestBodySize: 5, RequestContentType: "application/json", ParseStatus: model.StatusTruncated}}},
		{name: "mid-stream join: response without request, then resync",
			steps: []step{s2c("dy of an earlier response\r\nmore\n"), s2c(notFound), c2s("=1&b=2"), c2s(getReq), s2c(okResp)},
			want:  []model.HTTPCall{{HTTPVersion: "1.1", Status: 404, ResponseHeaderSize: int64(len(notFound)), ParseStatus: model.StatusNoRequest}, getCall}},
		{name: "header names case-insensitive, values trimmed",
			steps: []step{c2s("GET http://proxy.example/p/q?z HTTP/1.1\r\nx-FORWARDED-for:  1.2.3.4, 5.6.7.8 \r\nX-Request-Id:\tabc\r\nTRACEPARENT: 00-01-02-01\r\n\r\n"),
				s2c("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")},
			want: []model.HTTPCall{{Method: "GET", Host: "proxy.example", Path: "/p/q", Query: "z", HTTPVersion: "1.1", Status: 200,
				RequestHeaderSize: 125, ResponseHeaderSize: 38, XForwardedFor: "1.2.3.4, 5.6.7.8", XRequestID: "abc",
				Traceparent: "00-01-02-01", ParseStatus: model.StatusOK}}},
		{name: "oversized header block is a parse error, then resync", syn: true,
			steps:     []step{c2s(getReq), s2c(okResp), c2s("GET /big HTTP/1.1\r\nX: " + strings.Repeat("a", 70<<10) + "\r\n\r\n"), c2s(getReq), s2c(okResp)},
			want:      []model.HTTPCall{getCall, getCall},
			parseErrs: 1},
		{name: "bad chunk size cuts the message", syn: true,
			steps: []step{c2s(getReq), s2c("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), s2c(okResp)},
			want: []model.HTTPCall{{Method: "GET", Host: "example.com", Path: "/a", Query: "x=1", HTTPVersion: "1.1", Status: 200,
				RequestHeaderSize: int64(len(getReq)), ResponseHeaderSize: 47, UserAgent: "t/1", ParseStatus: model.StatusTruncated},
				{HTTPVersion: "1.1", Status: 200, ResponseHeaderSize: int64(len(okResp) - 5), ResponseBodySize: 5, ResponseContentType: "text/plain", ParseStatus: model.StatusNoRequest}},
			parseErrs: 1},
		{name: "not HTTP when the stream start is seen", syn: true,
			steps:   []step{c2s("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), s2c(okResp), c2s(getReq)},
			nonHTTP: true},
		{name: "gap inside a content-length body keeps framing", syn: true,
			steps: []step{c2s(getReq), s2c(okResp[:len(okResp)-4]), {side: 1, gap: 2}, s2c("lo"), c2s(getReq), s2c(okResp)},
			want: []model.HTTPCall{{Method: "GET", Host: "example.com", Path: "/a", Query: "x=1", HTTPVersion: "1.1", Status: 200,
				RequestHeaderSize: int64(len(getReq)), ResponseHeaderSize: int64(len(okResp) - 5), ResponseBodySize: 5,
				ResponseContentType: "text/plain", UserAgent: "t/1", ParseStatus: model.StatusGap}, getCall}},
		{name: "gap in chunked body: gap call, resync on next response", syn: true,
			steps: []step{c2s(getReq + getReq), s2c(chunked[:50]), {side: 1, gap: 10}, s2c("ld\r\n0\r\n\r\n"), s2c(okResp)},
			want: []model.HTTPCall{{Method: "GET", Host: "example.com", Path: "/a", Query: "x=1", HTTPVersion: "1.1", Status: 200,
				RequestHeaderSize: int64(len(getReq)), ResponseHeaderSize: 47, UserAgent: "t/1", ParseStatus: model.StatusGap},
				func() model.HTTPCall { c := getCall; c.ParseStatus = model.StatusGap; return c }()}},
		{name: "gap between requests resyncs at next request line", syn: true,
			steps: []step{c2s(getReq), {side: 0, gap: 30}, c2s("ther-request\r\n\r\n" + getReq), s2c(okResp + okResp)},
			want:  []model.HTTPCall{getCall, func() model.HTTPCall { c := getCall; c.ParseStatus = model.StatusGap; return c }()}},
	}
	for _, tt := range tests {
		maxLen := 0
		for _, s := range tt.steps {
			maxLen = max(maxLen, len(s.data))
		}
		if maxLen > 4096 {
			maxLen = 300 // long inputs: split positions around the start only
		}
		for split := 0; split <= maxLen; split++ {
			h := newHarness(tt.syn)
			h.run(tt.steps, split)
			got := make([]model.HTTPCall, len(h.calls))
			for i, c := range h.calls {
				got[i] = strip(*c)
			}
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tt.want) {
				t.Errorf("%s split %d:\n%s", tt.name, split, diffCalls(got, tt.want))
				break
			}
			if e := h.ctr.ParseErrors.Load(); e != tt.parseErrs {
				t.Fatalf("%s split %d: parse errors %d, want %d", tt.name, split, e, tt.parseErrs)
			}
			if h.conn.NonHTTP() != tt.nonHTTP {
				t.Fatalf("%s split %d: NonHTTP %v", tt.name, split, h.conn.NonHTTP())
			}
			for _, c := range h.calls {
				if c.ClientAddr != cliAddr || c.ServerAddr != srvAddr {
					t.Fatalf("%s: addresses %v -> %v", tt.name, c.ClientAddr, c.ServerAddr)
				}
			}
		}
	}
}

// TestConnByteByByte feeds a keep-alive conversation one byte at a time.
func TestConnByteByByte(t *testing.T) {
	h := newHarness(true)
	feed := func(side int, s string) {
		for i := 0; i < len(s); i++ {
			h.conn.Data(side, []byte{s[i]}, t0)
		}
	}
	feed(0, getReq+postReq)
	feed(1, okResp+chunked)
	h.conn.Close(t0)
	if len(h.calls) != 2 || h.calls[0].ResponseBodySize != 5 || h.calls[1].ResponseBodySize != 11 || h.calls[1].RequestBodySize != 7 {
		for _, c := range h.calls {
			t.Logf("%+v", *c)
		}
		t.Fatalf("got %d calls", len(h.calls))
	}
}

// TestConnTimestamps checks the four timestamps: first byte of the start
// line and last byte of the message.
func TestConnTimestamps(t *testing.T) {
	h := newHarness(false)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	h.conn.Data(0, []byte(postReq[:10]), at(1))
	h.conn.Data(0, []byte(postReq[10:len(postReq)-1]), at(2))
	h.conn.Data(0, []byte(postReq[len(postReq)-1:]), at(3))
	h.conn.Data(1, []byte("\r\n"+okResp[:20]), at(4)) // a stray CRLF before the status line is skipped
	h.conn.Data(1, []byte(okResp[20:]), at(5))
	if len(h.calls) != 1 {
		t.Fatalf("got %d calls", len(h.calls))
	}
	c := h.calls[0]
	if !c.RequestStart.Equal(at(1)) || !c.RequestEnd.Equal(at(3)) || !c.ResponseStart.Equal(at(4)) || !c.ResponseEnd.Equal(at(5)) {
		t.Errorf("times %v %v %v %v", c.RequestStart, c.RequestEnd, c.ResponseStart, c.ResponseEnd)
	}
	if c.Duration() != 4*time.Millisecond {
		t.Errorf("duration %v", c.Duration())
	}
	if c.ClientAddr != cliAddr {
		t.Errorf("client decided from the request line: got %v", c.ClientAddr)
	}
}

// TestConnClientFromResponse: with no SYN, the side sending a status line is
// the server even when it speaks first.
func TestConnClientFromResponse(t *testing.T) {
	h := newHarness(false)
	h.conn.Data(0, []byte(notFound), t0) // side 0 is the server here
	h.conn.Close(t0)
	if len(h.calls) != 1 || h.calls[0].ServerAddr != cliAddr || h.calls[0].ParseStatus != model.StatusNoRequest {
		t.Fatalf("got %+v", h.calls)
	}
}

// TestConnNonHTTPMidStream: without SYN, a connection whose bytes never
// contain a start line is declared non-HTTP after the scan budget.
func TestConnNonHTTPMidStream(t *testing.T) {
	h := newHarness(false)
	junk := []byte(strings.Repeat("binary\x00\x01 data\n", 1000))
	for i := 0; i < 40 && !h.conn.Done(); i++ {
		h.conn.Data(i&1, junk, t0)
	}
	if !h.conn.NonHTTP() || h.ctr.NonHTTP.Load() != 1 {
		t.Fatalf("NonHTTP = %v", h.conn.NonHTTP())
	}
}

// diffCalls describes how two call lists differ, field by field.
func diffCalls(got, want []model.HTTPCall) string {
	var b strings.Builder
	if len(got) != len(want) {
		fmt.Fprintf(&b, "%d calls, want %d\n", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		g, w := fmt.Sprintf("%+v", got[i]), fmt.Sprintf("%+v", want[i])
		if g != w {
			gf, wf := strings.Fields(g), strings.Fields(w)
			for j := range min(len(gf), len(wf)) {
				if gf[j] != wf[j] {
					fmt.Fprintf(&b, "call %d: got %s want %s\n", i, gf[j], wf[j])
				}
			}
		}
	}
	for i := len(want); i < len(got); i++ {
		fmt.Fprintf(&b, "extra %+v\n", got[i])
	}
	return b.String()
}

// TestConnBudget: partial header blocks are bounded across connections.
func TestConnBudget(t *testing.T) {
	var ctr Counters
	opts := DefaultOptions(&ctr)
	// Room for a call in flight, then for one partial header block of
	// about 2 KiB but not two.
	lim := membudget.NewLimit(exchangeCost + int64(len(getReq)+len(okResp)) + 2100)
	opts.Budget = lim
	var calls []*model.HTTPCall
	emit := func(c *model.HTTPCall) { calls = append(calls, c) }
	a := NewConn(&opts, cliAddr, srvAddr, emit)
	b := NewConn(&opts, cliAddr, srvAddr, emit)
	for _, c := range []*Conn{a, b} {
		c.SYN(0, false)
		c.Data(0, []byte(getReq), t0)
		c.Data(1, []byte(okResp), t0)
	}
	partial := "GET /partial HTTP/1.1\r\nX: " + strings.Repeat("a", 1970)
	a.Data(0, []byte(partial), t0) // held: within budget
	if lim.Used() != a.Memory() || a.Memory() < int64(len(partial)) {
		t.Fatalf("budget used %d, a holds %d", lim.Used(), a.Memory())
	}
	b.Data(0, []byte(partial), t0) // over budget: dropped
	if lim.Used() != a.Memory() || b.Memory() != 0 || ctr.ParseErrors.Load() != 1 || ctr.MemoryRefused.Load() != 1 {
		t.Fatalf("budget used %d, parse errors %d, refused %d", lim.Used(), ctr.ParseErrors.Load(), ctr.MemoryRefused.Load())
	}
	a.Close(t0)
	b.Close(t0)
	if lim.Used() != 0 {
		t.Fatalf("budget leak: %d", lim.Used())
	}
	if len(calls) != 2 {
		t.Fatalf("%d calls", len(calls))
	}
}
