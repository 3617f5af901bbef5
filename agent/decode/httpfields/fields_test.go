package httpfields

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
)

var update = flag.Bool("update", false, "rewrite golden files")

var (
	src = netip.MustParseAddr("10.0.0.1")
	// capture time of the requests: 2026-01-02T03:04:05.5Z
	ts = time.Date(2026, 1, 2, 3, 4, 5, 500_000_000, time.UTC)
)

// jwt builds an unsigned-looking compact JWS with the given payload JSON.
func jwt(payload string) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(payload)) + ".c2lnbmF0dXJl"
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func headers(kv ...string) []Header {
	var hs []Header
	for i := 0; i+1 < len(kv); i += 2 {
		hs = append(hs, Header{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	return hs
}

func newX(t testing.TB, cfg Config) *Extractor {
	t.Helper()
	if cfg.Salt == nil {
		cfg.Salt = []byte("test salt")
	}
	x, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// reqResult is the comparable form of a Request.
type reqResult struct {
	ident, iss, sub, aud string
	iat, nbf, exp        int64 // Unix seconds, 0 when absent
	notYetValid, expired bool
	creds                int
	multiple             bool
	origin               string
	template             string
	templateChanged      bool
}

// result summarizes r; an unchanged template is shown as the path.
func result(r *Request, path string) reqResult {
	sec := func(ns int64, has bool) int64 {
		if !has {
			return 0
		}
		return ns / 1e9
	}
	res := reqResult{
		ident: string(r.Identification), iss: string(r.JWT.Iss), sub: string(r.JWT.Sub), aud: string(r.JWT.Aud),
		iat: sec(r.JWT.Iat, r.JWT.HasIat), nbf: sec(r.JWT.Nbf, r.JWT.HasNbf), exp: sec(r.JWT.Exp, r.JWT.HasExp),
		notYetValid: r.NotYetValid, expired: r.Expired, creds: r.Credentials, multiple: r.Multiple,
		origin: r.Origin.String(), template: string(r.Template), templateChanged: r.TemplateChanged,
	}
	if !r.TemplateChanged {
		if r.Template != nil {
			res.template = "unexpected: " + res.template
		} else {
			res.template = path
		}
	}
	return res
}

func TestRequest(t *testing.T) {
	now := ts.Unix() // 1767323045
	tok := jwt(`{"iss":"https://iam.example","sub":"alice","aud":["api","admin"],"iat":1767323000,"nbf":1767323000,"exp":1767326600,"scope":{"a":[1,2,{"b":null}]}}`)
	tests := []struct {
		name string
		hs   []Header
		path string
		want reqResult
	}{
		{
			name: "no credentials: origin is the packet source, path unchanged",
			path: "/health",
			want: reqResult{origin: "10.0.0.1", template: "/health"},
		},
		{
			name: "basic auth login",
			hs:   headers("Authorization", basic("bob", "s3cr:et")),
			path: "/",
			want: reqResult{ident: "bob", creds: 1, origin: "10.0.0.1", template: "/"},
		},
		{
			name: "bearer JWT: claims, valid at capture time",
			hs:   headers("authorization", "Bearer "+tok),
			path: "/",
			want: reqResult{ident: "alice", iss: "https://iam.example", sub: "alice", aud: "api,admin",
				iat: 1767323000, nbf: 1767323000, exp: 1767326600, creds: 1, origin: "10.0.0.1", template: "/"},
		},
		{
			// The IAM clock ran fast: nbf is 1 ms after the capture time.
			name: "JWT not yet valid by a millisecond (fractional nbf)",
			hs:   headers("Authorization", "Bearer "+jwt(`{"sub":"svc","nbf":1767323045.501}`)),
			path: "/",
			want: reqResult{ident: "svc", sub: "svc", nbf: now, notYetValid: true, creds: 1, origin: "10.0.0.1", template: "/"},
		},
		{
			name: "JWT expired at capture time",
			hs:   headers("Authorization", "bearer "+jwt(`{"sub":"svc","exp":1767323045}`)),
			path: "/",
			want: reqResult{ident: "svc", sub: "svc", exp: now, expired: true, creds: 1, origin: "10.0.0.1", template: "/"},
		},
		{
			name: "bearer token that is not a JWT: a credential without identity",
			hs:   headers("Authorization", "Bearer opaque-token-123"),
			path: "/",
			want: reqResult{creds: 1, origin: "10.0.0.1", template: "/"},
		},
		{
			name: "client certificate and bearer token: two credentials",
			hs:   headers("X-Forwarded-Client-Cert", `By=spiffe://a;Hash=abc;Subject="CN=carol"`, "Authorization", "Bearer "+jwt(`{"sub":"dave"}`)),
			path: "/",
			want: reqResult{ident: "dave", sub: "dave", creds: 2, multiple: true, origin: "10.0.0.1", template: "/"},
		},
		{
			name: "two Authorization headers for two users",
			hs:   headers("Authorization", basic("erin", "x"), "Authorization", "Bearer "+jwt(`{"sub":"frank"}`)),
			path: "/",
			want: reqResult{ident: "erin", sub: "frank", creds: 2, multiple: true, origin: "10.0.0.1", template: "/"},
		},
		{
			name: "X-Forwarded-For first entry with spaces",
			hs:   headers("X-Forwarded-For", " 203.0.113.9 , 10.0.0.2", "Forwarded", "for=198.51.100.1"),
			path: "/",
			want: reqResult{origin: "203.0.113.9", template: "/"},
		},
		{
			name: "Forwarded for= quoted IPv6 with port",
			hs:   headers("Forwarded", `For="[2001:db8:cafe::17]:4711";proto=https, for=192.0.2.1`),
			path: "/",
			want: reqResult{origin: "2001:db8:cafe::17", template: "/"},
		},
		{
			name: "X-Forwarded-For IPv4 with port; garbage Forwarded ignored",
			hs:   headers("x-forwarded-for", "192.0.2.60:3456"),
			path: "/",
			want: reqResult{origin: "192.0.2.60", template: "/"},
		},
		{
			name: "obfuscated Forwarded and bad X-Forwarded-For: packet source",
			hs:   headers("Forwarded", "for=_hidden", "X-Forwarded-For", "unknown"),
			path: "/",
			want: reqResult{origin: "10.0.0.1", template: "/"},
		},
		{
			name: "bad base64 in Basic",
			hs:   headers("Authorization", "Basic !!!notbase64"),
			path: "/",
			want: reqResult{creds: 1, origin: "10.0.0.1", template: "/"},
		},
		{
			name: "template placeholders",
			path: "/v1/users/42/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301/files/d41d8cd98f00b204e9800998ecf8427e/t/AbC123xyz456QWE789tok",
			want: reqResult{origin: "10.0.0.1", template: "/v1/users/{id}/orders/{uuid}/files/{hash}/t/{token}", templateChanged: true},
		},
		{
			name: "words and versions are kept",
			path: "/api/v2/get-all-users-by-company/index.html",
			want: reqResult{origin: "10.0.0.1", template: "/api/v2/get-all-users-by-company/index.html"},
		},
	}
	x := newX(t, Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := result(x.Request(tt.hs, []byte(tt.path), src, ts), tt.path)
			if got != tt.want {
				t.Errorf("\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestTemplateRules(t *testing.T) {
	x := newX(t, Config{TemplateRules: []TemplateRule{
		{Pattern: `^/users/([^/]+)/avatar$`, Template: "/users/{user}/avatar"},
		{Pattern: `^/static/(?P<kind>css|js)/.*$`, Template: "/static/${kind}/*"},
	}})
	tests := []struct{ path, want string }{
		{"/users/alice/avatar", "/users/{user}/avatar"},
		{"/static/js/app.123.js", "/static/js/*"},
		{"/users/42/profile", "/users/{id}/profile"}, // no rule: built-in
	}
	for _, tt := range tests {
		if got := string(x.Request(nil, []byte(tt.path), src, ts).Template); got != tt.want {
			t.Errorf("%s: template %q, want %q", tt.path, got, tt.want)
		}
	}
	if _, err := New(Config{TemplateRules: []TemplateRule{{Pattern: "("}}}); err == nil || !strings.Contains(err.Error(), "template rule 0") {
		t.Errorf("bad rule: err %v", err)
	}
}

// TestHeadersGolden checks the stored header sets (request and response)
// against testdata/headers.golden: names lower-cased, repeated names
// joined, secrets replaced by salted hashes with cookie names and the
// Authorization scheme kept, extra redacted headers, all_headers.
func TestHeadersGolden(t *testing.T) {
	tok := jwt(`{"sub":"alice"}`)
	req := headers(
		"Host", "api", "Accept", "*/*", "Authorization", "Bearer "+tok, "Cookie", "sid=abc123; theme=dark",
		"X-Api-Key", "k-123", "Accept", "text/html", "User-Agent", "x\"y\\z\x01\xff",
		"Proxy-Authorization", basic("p", "q"),
	)
	resp := headers("Set-Cookie", "sid=abc123; Path=/; HttpOnly", "Set-Cookie", "b=2, 3", "Server", "nginx", "Content-Type", "text/plain")
	var out bytes.Buffer
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"default", Config{HeadersRedact: []string{"X-API-Key"}}},
		{"keep list", Config{HeadersKeep: []string{"accept", "x-api-key", "server"}, HeadersRedact: []string{"x-api-key"}}},
		{"all headers", Config{AllHeaders: true, HeadersRedact: []string{"x-api-key"}}},
	} {
		x := newX(t, c.cfg)
		rq := string(x.Request(req, []byte("/"), src, ts).Headers)
		rs := string(x.Response(resp).Headers)
		for _, j := range []string{rq, rs} {
			if j != "" && !json.Valid([]byte(j)) {
				t.Errorf("%s: invalid JSON %s", c.name, j)
			}
			if strings.Contains(j, "abc123") || strings.Contains(j, tok) || strings.Contains(j, "k-123") {
				t.Errorf("%s: secret in clear: %s", c.name, j)
			}
		}
		out.WriteString(c.name + "\n  request:  " + rq + "\n  response: " + rs + "\n")
	}
	// The same secret gives the same hash, another salt another hash.
	a := newX(t, Config{}).Request(headers("Cookie", "sid=abc123"), []byte("/"), src, ts).Headers
	b := newX(t, Config{}).Request(headers("Cookie", "sid=abc123"), []byte("/"), src, ts).Headers
	c := newX(t, Config{Salt: []byte("other")}).Request(headers("Cookie", "sid=abc123"), []byte("/"), src, ts).Headers
	if !bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Errorf("hashes: same salt %s / %s, other salt %s", a, b, c)
	}
	const golden = "testdata/headers.golden"
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if out.String() != string(want) {
		t.Errorf("headers differ from %s:\n got:\n%s\nwant:\n%s", golden, out.String(), want)
	}
}

func TestJWTDecode(t *testing.T) {
	tests := []struct {
		name, token string
		ok          bool
		sub, aud    string
	}{
		{"escapes and surrogates", jwt(`{"sub":"caf\u00e9 \ud83d\ude00 \"q\"","aud":"x"}`), true, "café 😀 \"q\"", "x"},
		{"lone surrogate becomes U+FFFD", jwt(`{"sub":"\ud800"}`), true, "\uFFFD", ""},
		{"non-string sub ignored", jwt(`{"sub":12,"aud":[1,"b"]}`), true, "", "b"},
		{"padding tolerated", strings.Replace(jwt(`{"sub":"p"}`), ".c2ln", "=.c2ln", 1), true, "p", ""},
		{"payload not JSON", "aGVsbG8.aGVsbG8.c2ln", false, "", ""},
		{"two parts", "aGVsbG8.aGVsbG8", false, "", ""},
		{"four parts", jwt(`{}`) + ".x", false, "", ""},
		{"bad base64", "a.@@@.b", false, "", ""},
		{"trailing garbage", jwt(`{"sub":"a"} x`), false, "", ""},
		{"deep nesting", jwt(`{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`), false, "", ""},
		{"truncated string", jwt(`{"sub":"abc`), false, "", ""},
	}
	var d jwtDecoder
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ok := d.decode([]byte(tt.token))
			if ok != tt.ok || string(c.Sub) != tt.sub || string(c.Aud) != tt.aud {
				t.Errorf("got ok %v sub %q aud %q; want %v %q %q", ok, c.Sub, c.Aud, tt.ok, tt.sub, tt.aud)
			}
		})
	}
}

func compress(t testing.TB, coding string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w interface {
		Write([]byte) (int, error)
		Close() error
	}
	switch coding {
	case "gzip":
		w = gzip.NewWriter(&buf)
	case "deflate":
		w = zlib.NewWriter(&buf)
	case "raw-deflate":
		w, _ = flate.NewWriter(&buf, flate.BestSpeed)
	case "br":
		w = brotli.NewWriter(&buf)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecodeBody(t *testing.T) {
	text := []byte(strings.Repeat("hello, body! ", 5))
	bomb := bytes.Repeat([]byte{0}, 10<<20) // 10 MiB of zeros: ~10 KiB gzip
	tests := []struct {
		name      string
		enc       string
		raw       []byte
		cut       bool
		wantText  string
		wantSize  int
		truncated bool
		decoded   bool
	}{
		{"identity", "", text, false, string(text), len(text), false, true},
		{"gzip", "gzip", compress(t, "gzip", text), false, string(text), len(text), false, true},
		{"deflate (zlib)", "deflate", compress(t, "deflate", text), false, string(text), len(text), false, true},
		{"deflate (raw)", "Deflate", compress(t, "raw-deflate", text), false, string(text), len(text), false, true},
		{"br", "br", compress(t, "br", text), false, string(text), len(text), false, true},
		{"gzip then br", "gzip, br", compress(t, "br", compress(t, "gzip", text)), false, string(text), len(text), false, true},
		{"gzip bomb bounded by the cap", "gzip", compress(t, "gzip", bomb), false, strings.Repeat("\uFFFD", 100), 100, true, true},
		{"cut gzip keeps the decoded prefix", "gzip", compress(t, "gzip", text)[:40], true, "", -1, true, true},
		{"corrupt gzip: raw bytes", "gzip", []byte("not gzip at all"), false, "not gzip at all", 15, false, false},
		{"unknown coding: raw bytes", "compress", []byte("abc"), false, "abc", 3, false, false},
		{"raw longer than the cap", "", bytes.Repeat([]byte("a"), 150), true, strings.Repeat("a", 100), 100, true, true},
	}
	x := newX(t, Config{CaptureBodies: true, BodyMaxBytes: 100})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := x.DecodeBody(tt.enc, tt.raw, tt.cut)
			if tt.wantSize >= 0 && (string(b.Text) != tt.wantText || b.Size != tt.wantSize) {
				t.Errorf("text %q (%d bytes), want %q (%d)", b.Text, b.Size, tt.wantText, tt.wantSize)
			}
			if b.Size > 100 || len(b.Text) > 3*100 {
				t.Errorf("output over the cap: %d", b.Size)
			}
			if b.Truncated != tt.truncated || b.Decoded != tt.decoded {
				t.Errorf("truncated %v decoded %v, want %v %v", b.Truncated, b.Decoded, tt.truncated, tt.decoded)
			}
		})
	}
}

// TestRequestAllocs: deriving the fields of a typical request allocates
// nothing once buffers have grown.
func TestRequestAllocs(t *testing.T) {
	x := newX(t, Config{})
	hs := headers("Host", "api", "Authorization", "Bearer "+jwt(`{"sub":"alice","exp":1767326600}`),
		"Cookie", "a=1; b=2", "X-Forwarded-For", "203.0.113.9", "Accept", "*/*")
	path := []byte("/v1/users/42")
	n := testing.AllocsPerRun(100, func() {
		x.Request(hs, path, src, ts)
		x.Response(hs)
	})
	if n != 0 {
		t.Errorf("%v allocations per request", n)
	}
}

func BenchmarkRequest(b *testing.B) {
	x := newX(b, Config{})
	hs := headers("Host", "api.internal", "User-Agent", "bench/1.0", "Accept", "*/*", "X-Request-Id", "00000001")
	path := []byte("/api/items/17")
	b.ReportAllocs()
	for b.Loop() {
		x.Request(hs, path, src, ts)
	}
}

func BenchmarkRequestJWT(b *testing.B) {
	x := newX(b, Config{})
	hs := headers("Host", "api.internal", "Authorization", "Bearer "+jwt(`{"iss":"https://iam","sub":"alice","aud":"api","iat":1767323000,"exp":1767326600}`),
		"Cookie", "sid=abc; theme=dark", "X-Forwarded-For", "203.0.113.9")
	path := []byte("/api/items/17")
	b.ReportAllocs()
	for b.Loop() {
		x.Request(hs, path, src, ts)
	}
}
