package httpfields

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzExtractor feeds arbitrary header blocks, paths and bodies: no panic,
// header sets are valid JSON objects, derived strings valid UTF-8, decoded
// bodies bounded by BodyMaxBytes (compression bombs included), and no
// allocation beyond the buffers (checked by the memory limit of the fuzz
// run, not here).
func FuzzExtractor(f *testing.F) {
	for _, s := range []struct{ hdrs, path, enc string }{
		{"Authorization: Bearer " + jwt(`{"sub":"a","aud":["x","y"],"exp":1e3,"nbf":-1.5}`) + "\nCookie: a=1; b", "/u/42", "gzip"},
		{"authorization: Basic Ym9iOnB3\nX-Forwarded-For: [::1]:80, 1.2.3.4\nForwarded: for=\"_x\"", "/" + strings.Repeat("a1", 40), "br"},
		{"Set-Cookie: x=1; Path=/\nset-cookie: y=2\nX-Client-Cert: c", "/3f2504e0-4f89-11d3-9a0c-0305e82c3301", "deflate"},
		{"Authorization: Bearer a." + strings.Repeat("e30", 100) + ".b", "//", "gzip, br, deflate, x"},
	} {
		f.Add(s.hdrs, s.path, s.enc, []byte("body"))
	}
	f.Add("", "/", "gzip", compress(f, "gzip", bytes.Repeat([]byte("A"), 1<<20)))
	f.Add("", "/", "br", compress(f, "br", bytes.Repeat([]byte("B"), 1<<20)))
	f.Add("", "/", "deflate", compress(f, "deflate", bytes.Repeat([]byte("C"), 1<<20)))
	x := newX(f, Config{AllHeaders: true, HeadersRedact: []string{"x-client-cert"}, CaptureBodies: true, BodyMaxBytes: 512,
		TemplateRules: []TemplateRule{{Pattern: `^/u/(\d+)$`, Template: "/u/{id}/$1"}}})
	f.Fuzz(func(t *testing.T, hdrs, path, enc string, body []byte) {
		var hs []Header
		for line := range strings.SplitSeq(hdrs, "\n") {
			name, value, _ := strings.Cut(line, ":")
			hs = append(hs, Header{Name: []byte(name), Value: []byte(value)})
		}
		r := x.Request(hs, []byte(path), src, ts)
		if r.Headers != nil && (!json.Valid(r.Headers) || r.Headers[0] != '{') {
			t.Fatalf("bad header set %q", r.Headers)
		}
		for _, b := range [][]byte{r.Identification, r.JWT.Iss, r.JWT.Sub, r.JWT.Aud, r.ContentEncoding} {
			if !utf8.Valid(b) {
				t.Fatalf("invalid UTF-8 %q", b)
			}
		}
		if r.TemplateChanged && !utf8.Valid(r.Template) {
			t.Fatalf("invalid template %q", r.Template)
		}
		if !r.Origin.IsValid() {
			t.Fatalf("no origin")
		}
		resp := x.Response(hs)
		if resp.Headers != nil && !json.Valid(resp.Headers) {
			t.Fatalf("bad response header set %q", resp.Headers)
		}
		b := x.DecodeBody(enc, body, false)
		if b.Size > 512 || len(b.Text) > 3*512 || !utf8.Valid(b.Text) {
			t.Fatalf("body: size %d, text %d bytes", b.Size, len(b.Text))
		}
	})
}
