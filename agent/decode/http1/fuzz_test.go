package http1

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/orbweaver/orbweaver/agent/decode/httpfields"
	"github.com/orbweaver/orbweaver/internal/model"

	"github.com/orbweaver/orbweaver/agent/membudget"
)

// fuzzBodyMax is the body cap of the fuzz target: decoded bodies must stay
// within it whatever the input (gzip bombs included).
const fuzzBodyMax = 256

// fuzzRun turns fuzz input into parser input and closes the connection.
// data[0] bit 0: SYN seen. Then records of a header byte h and a length byte
// n for side h>>2&1: h&3 == 0 or 3 the next n bytes as data, 1 a gap of n+1
// bytes, 2 the end of the side. Caps are small so that they are reached.
func fuzzRun(data []byte, emit func(*model.HTTPCall)) *Conn {
	var ctr Counters
	opts := DefaultOptions(&ctr)
	opts.MaxHeaderBytes = 512 // small caps reach the cap paths
	opts.MaxResyncScan = 1024
	opts.MaxPending = 4
	opts.Budget = membudget.NewLimit(4096)
	x, err := httpfields.New(httpfields.Config{
		AllHeaders: true, HeadersRedact: []string{"x-secret"}, Salt: []byte("fuzz"),
		CaptureBodies: true, BodyMaxBytes: fuzzBodyMax,
		TemplateRules: []httpfields.TemplateRule{{Pattern: `^/r/([^/]+)$`, Template: "/r/{x}/$1"}},
	})
	if err != nil {
		panic(err)
	}
	opts.Fields = x
	c := NewConn(&opts, cliAddr, srvAddr, emit)
	if len(data) == 0 {
		return c
	}
	if data[0]&1 != 0 {
		c.SYN(0, false)
		c.SYN(1, true)
	}
	data = data[1:]
	ts := t0
	for len(data) >= 2 {
		h, n := data[0], int(data[1])
		data = data[2:]
		side := int(h >> 2 & 1)
		ts = ts.Add(time.Millisecond)
		switch h & 3 {
		case 0, 3:
			n = min(n, len(data))
			buf := append([]byte(nil), data[:n]...)
			c.Data(side, buf, ts)
			clear(buf)
			data = data[n:]
		case 1:
			c.Gap(side, n+1, ts)
		case 2:
			c.End(side, ts)
		}
	}
	if len(data) > 0 {
		c.Data(0, append([]byte(nil), data...), ts)
	}
	c.Close(ts.Add(time.Millisecond))
	return c
}

// FuzzConn checks that arbitrary input never panics or hangs, that every
// call is well-formed and that a call is never changed after emit.
func FuzzConn(f *testing.F) {
	rec := func(side int, s string) []byte { return append([]byte{byte(side << 2), byte(len(s))}, s...) }
	seed := func(parts ...[]byte) []byte {
		out := []byte{1}
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	f.Add(seed(rec(0, getReq), rec(1, okResp)))
	f.Add(seed(rec(0, postReq), rec(1, chunked)))
	f.Add(seed(rec(0, "HEAD / HTTP/1.1\r\n\r\n"), rec(1, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")))
	f.Add(seed(rec(0, "GET / HTTP/1.0\r\n\r\n"), rec(1, "HTTP/1.0 200 OK\r\n\r\nabc"), []byte{1<<2 | 2, 0}))
	f.Add(seed(rec(0, "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"), rec(1, "HTTP/1.1 100 Continue\r\n\r\n"), rec(0, "hi"), rec(1, notFound)))
	f.Add(seed(rec(0, getReq), []byte{1<<2 | 1, 7}, rec(1, okResp)))
	// Derived fields: hostile JWTs, bad base64, many headers, compressed
	// bodies (a gzip bomb: 1 MiB of zeros in ~1 KiB).
	b64 := base64.RawURLEncoding.EncodeToString
	for _, auth := range []string{
		"Bearer " + b64([]byte(`{}`)) + "." + b64([]byte(`{"sub":"\ud800\u0000x","aud":[[[[]]]],"nbf":1e99,"exp":-5.5}`)) + ".s",
		"Bearer " + b64([]byte(`{}`)) + "." + b64([]byte(`{"sub":`+strings.Repeat("[", 60))) + ".s",
		"Bearer a.b.c.d", "Bearer ..", "Basic !!!", "Basic " + base64.StdEncoding.EncodeToString([]byte("\xff\x00:pw")), "Basic Og==",
	} {
		f.Add(seed(rec(0, "GET /r/1 HTTP/1.1\r\nAuthorization: "+auth+"\r\nX-Forwarded-For: ::ffff:1.2.3.4%eth0\r\n\r\n"), rec(1, okResp)))
	}
	f.Add(seed(rec(0, "GET /a HTTP/1.1\r\n"+strings.Repeat("Cookie: a=1;b;=;;\r\n", 10)+"\r\n"), rec(1, okResp)))
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	zw.Write(make([]byte, 1<<20))
	zw.Close()
	resp := "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: " + itoa(bomb.Len()) + "\r\n\r\n"
	in := seed(rec(0, getReq), rec(1, resp))
	for b := bomb.Bytes(); len(b) > 0; b = b[min(len(b), 255):] {
		in = append(in, rec(1, string(b[:min(len(b), 255)]))...)
	}
	f.Add(in)
	f.Fuzz(func(t *testing.T, data []byte) {
		type emitted struct {
			call *model.HTTPCall
			copy model.HTTPCall
		}
		var got []emitted
		conn := fuzzRun(data, func(c *model.HTTPCall) { got = append(got, emitted{c, *c}) })
		if used := conn.opts.Budget.(*membudget.Limit).Used(); conn.Memory() != 0 || used != 0 {
			t.Fatalf("after Close: memory %d, budget %d", conn.Memory(), used)
		}
		for _, e := range got {
			c := e.call
			if *c != e.copy {
				t.Fatalf("call modified after emit: %+v -> %+v", e.copy, *c)
			}
			switch c.ParseStatus {
			case model.StatusOK, model.StatusNoRequest, model.StatusNoResponse, model.StatusGap, model.StatusTruncated, model.StatusUpgraded:
			default:
				t.Fatalf("bad parse status %q", c.ParseStatus)
			}
			if c.Status != 0 && (c.Status < 100 || c.Status > 999) || c.RequestBodySize < 0 || c.ResponseBodySize < 0 ||
				c.RequestHeaderSize < 0 || c.ResponseHeaderSize < 0 {
				t.Fatalf("bad call %+v", *c)
			}
			if c.Method == "" && c.ParseStatus == model.StatusOK {
				t.Fatalf("ok call without request: %+v", *c)
			}
			if !c.RequestEnd.IsZero() && c.RequestEnd.Before(c.RequestStart) || !c.ResponseEnd.IsZero() && c.ResponseEnd.Before(c.ResponseStart) {
				t.Fatalf("times out of order: %+v", *c)
			}
			checkFields(t, c)
		}
	})
}

// checkFields checks the derived fields of a fuzzed call: bodies bounded by
// the cap, header sets valid JSON objects, every string valid UTF-8.
func checkFields(t *testing.T, c *model.HTTPCall) {
	t.Helper()
	if c.RequestBodyDecodedSize > fuzzBodyMax || c.ResponseBodyDecodedSize > fuzzBodyMax ||
		len(c.RequestBody) > 3*fuzzBodyMax || len(c.ResponseBody) > 3*fuzzBodyMax {
		t.Fatalf("body over the cap: %d/%d bytes decoded", c.RequestBodyDecodedSize, c.ResponseBodyDecodedSize)
	}
	for _, h := range []string{c.RequestHeaders, c.ResponseHeaders} {
		if h != "" && (h[0] != '{' || !json.Valid([]byte(h)) || strings.Contains(h, `\u0000`)) {
			t.Fatalf("bad header set %q", h)
		}
	}
	// (A template equal to the path is the path, kept as sent.)
	tpl := c.Template
	if tpl == c.Path {
		tpl = ""
	}
	for _, s := range []string{c.Identification, tpl, c.JWTIssuer, c.JWTSubject, c.JWTAudience,
		c.RequestContentEncoding, c.ResponseContentEncoding, c.RequestBody, c.ResponseBody} {
		if !utf8.ValidString(s) {
			t.Fatalf("invalid UTF-8 %q", s)
		}
	}
	if c.Method != "" && (!c.Origin.IsValid() || c.CredentialsCount < 0) {
		t.Fatalf("request without origin: %+v", *c)
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
