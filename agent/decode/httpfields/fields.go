// Package httpfields derives the troubleshooting fields of an HTTP call from
// its header fields: identification (Basic-auth login or JWT subject), JWT
// claims decoded without verification and checked against the capture time,
// credential counts, the original client address, a route template of the
// path, the stored header set with secrets redacted, and bodies decoded from
// their content coding within a size limit.
//
// An Extractor holds the compiled configuration and reusable buffers. Its
// results alias those buffers and are valid until its next call; it is not
// safe for concurrent use (one per decoding goroutine). Extracting the
// fields of a message allocates nothing once the buffers have grown, except
// for configured template rules and body decoding.
package httpfields

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"hash"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// Config selects what is derived and stored. The zero value stores the
// DefaultHeaders, captures no body and hashes secrets with a random salt.
type Config struct {
	// HeadersKeep lists the header names (case-insensitive) stored in the
	// header set; nil means DefaultHeaders. Ignored when AllHeaders.
	HeadersKeep []string
	// AllHeaders stores every header.
	AllHeaders bool
	// HeadersRedact lists header names whose values are replaced by a
	// salted hash, in addition to Authorization, Proxy-Authorization,
	// Cookie and Set-Cookie (always redacted).
	HeadersRedact []string
	// Salt keys the hash of redacted values, so that equal secrets can be
	// matched without being stored. Use a per-agent secret that survives
	// restarts to match values across restarts; empty: 32 random bytes
	// chosen by New (equal values match within one Extractor only).
	Salt []byte
	// CaptureBodies keeps bodies (off by default), decoded from gzip,
	// deflate or br for display, up to BodyMaxBytes.
	CaptureBodies bool
	// BodyMaxBytes caps both the raw bytes kept and the decoded body
	// (default 64 KiB when 0).
	BodyMaxBytes int
	// TemplateRules are tried in order before the built-in path
	// normalization; the first match gives the template.
	TemplateRules []TemplateRule
}

// TemplateRule rewrites a path matching Pattern (RE2, matched against the
// path without its query) into Template, which may refer to submatches as
// in regexp.Expand ($1, ${name}).
type TemplateRule struct {
	Pattern  string
	Template string
}

// DefaultBodyMaxBytes is the body cap when Config.BodyMaxBytes is 0.
const DefaultBodyMaxBytes = 64 << 10

// DefaultHeaders returns the header names stored by default: headers useful
// for troubleshooting that have no dedicated column (credentials appear
// redacted).
func DefaultHeaders() []string {
	return []string{
		"accept", "accept-encoding", "accept-language", "authorization", "cache-control",
		"connection", "content-encoding", "content-length", "cookie", "forwarded",
		"location", "origin", "proxy-authorization", "referer", "retry-after", "server",
		"set-cookie", "tracestate", "transfer-encoding", "upgrade", "via", "www-authenticate",
		"x-forwarded-host", "x-forwarded-proto", "x-real-ip",
	}
}

// Header is one header field; slices alias the message.
type Header struct {
	Name, Value []byte
}

// hflag says what a header name means to the extractor.
type hflag uint16

const (
	fKeep        hflag = 1 << iota // stored in the header set
	fRedact                        // value replaced by a salted hash
	fAuth                          // Authorization
	fProxyAuth                     // Proxy-Authorization
	fCookie                        // Cookie
	fSetCookie                     // Set-Cookie
	fClientCert                    // a client-certificate header set by a TLS terminator
	fXFF                           // X-Forwarded-For
	fForwarded                     // Forwarded
	fEncoding                      // Content-Encoding
	fDone                          // already written (duplicates are joined)
	fSecret      = fAuth | fProxyAuth | fCookie | fSetCookie
	maxNameBytes = 64 // longer names are never special
)

// clientCertHeaders are set by TLS terminators (nginx, HAProxy, Envoy,
// Traefik) to pass the client certificate on: each one is a credential.
var clientCertHeaders = []string{
	"x-client-cert", "x-ssl-client-cert", "x-forwarded-client-cert", "ssl-client-cert",
	"x-client-certificate", "x-forwarded-tls-client-cert", "x-arr-clientcert",
}

// maxHeaders caps the header fields looked at per message.
const maxHeaders = 1024

// Extractor derives fields; see the package comment. Create it with New.
type Extractor struct {
	all bool
	// names holds the special header names by length: a name is looked up
	// by comparing it, ignoring ASCII case, with the few names of its
	// length (cheaper than hashing a lower-cased copy).
	names   [maxNameBytes + 1][]namedFlag
	rules   []rule
	mac     hash.Hash
	bodies  bool
	bodyMax int

	jwt   jwtDecoder
	out   []byte
	hdrs  []Header
	flags []hflag
	tmp   []byte
	sum   [sha256.Size]byte
	req   Request
	resp  Response
	body  bodyDecoder
}

// namedFlag is a lower-case header name and its flags.
type namedFlag struct {
	name string
	f    hflag
}

type rule struct {
	re       *regexp.Regexp
	template []byte
}

// New compiles cfg. It fails on an invalid template rule, naming it.
func New(cfg Config) (*Extractor, error) {
	x := &Extractor{all: cfg.AllHeaders, bodies: cfg.CaptureBodies, bodyMax: cfg.BodyMaxBytes}
	if x.bodyMax <= 0 {
		x.bodyMax = DefaultBodyMaxBytes
	}
	keep := cfg.HeadersKeep
	if keep == nil {
		keep = DefaultHeaders()
	}
	set := func(name string, f hflag) {
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "" || len(name) > maxNameBytes {
			return
		}
		l := x.names[len(name)]
		for i := range l {
			if l[i].name == name {
				l[i].f |= f
				return
			}
		}
		x.names[len(name)] = append(l, namedFlag{name, f})
	}
	for _, n := range keep {
		set(n, fKeep)
	}
	for _, n := range cfg.HeadersRedact {
		set(n, fRedact)
	}
	set("authorization", fAuth)
	set("proxy-authorization", fProxyAuth)
	set("cookie", fCookie)
	set("set-cookie", fSetCookie)
	set("x-forwarded-for", fXFF)
	set("forwarded", fForwarded)
	set("content-encoding", fEncoding)
	for _, n := range clientCertHeaders {
		set(n, fClientCert)
	}
	for i, r := range cfg.TemplateRules {
		re, err := regexp.Compile(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("template rule %d: pattern %q: %w", i, r.Pattern, err)
		}
		x.rules = append(x.rules, rule{re: re, template: []byte(r.Template)})
	}
	salt := cfg.Salt
	if len(salt) == 0 {
		salt = make([]byte, 32)
		if _, err := rand.Read(salt); err != nil {
			return nil, fmt.Errorf("redaction salt: %w", err)
		}
	}
	x.mac = hmac.New(sha256.New, append([]byte(nil), salt...))
	return x, nil
}

// CaptureBodies reports whether bodies are to be captured, and their cap.
func (x *Extractor) CaptureBodies() (bool, int) { return x.bodies, x.bodyMax }

// HeaderBuf returns an empty slice to collect a message's header fields
// into; pass it back to Request or Response so its storage is reused.
func (x *Extractor) HeaderBuf() []Header { return x.hdrs[:0] }

// MaxHeaders is how many header fields Request and Response look at.
const MaxHeaders = maxHeaders

// Request is what Extractor.Request derives. Byte slices alias the
// Extractor and are valid until its next call; nil means absent.
type Request struct {
	// Identification is the Basic-auth login, else the subject of a JWT
	// bearer token.
	Identification []byte
	// Claims of the first JWT bearer token, when one was decoded.
	JWT    Claims
	HasJWT bool
	// NotYetValid and Expired compare the JWT's nbf and exp with the
	// capture time of the request.
	NotYetValid, Expired bool
	// Credentials counts Authorization headers and client-certificate
	// headers. Multiple is set when there are several, or when two
	// credentials name different identities.
	Credentials int
	Multiple    bool
	// Origin is the first X-Forwarded-For address, else the Forwarded
	// "for" of the first element, else the packet source.
	Origin netip.Addr
	// Template is the path as a route template; TemplateChanged is false
	// when it equals the path.
	Template        []byte
	TemplateChanged bool
	// Headers is the stored header set as a JSON object (lower-case names;
	// repeated fields joined with ", "; secrets redacted), or nil when
	// no header is stored.
	Headers []byte
	// ContentEncoding is the Content-Encoding value.
	ContentEncoding []byte
}

// Response is what Extractor.Response derives; see Request.
type Response struct {
	Headers         []byte
	ContentEncoding []byte
}

// flagsOf returns the flags of a header name.
func (x *Extractor) flagsOf(name []byte) hflag {
	var f hflag
	if len(name) <= maxNameBytes {
		for _, nf := range x.names[len(name)] {
			if eqFold(name, nf.name) {
				f = nf.f
				break
			}
		}
	}
	if x.all {
		f |= fKeep
	}
	return f
}

// Request derives the fields of a request with header fields hs (as
// collected into HeaderBuf), path (without query), sent by src and
// captured at ts.
func (x *Extractor) Request(hs []Header, path []byte, src netip.Addr, ts time.Time) *Request {
	hs = hs[:min(len(hs), maxHeaders)]
	x.out = x.out[:0]
	r := &x.req
	*r = Request{Origin: src}
	var ident, iss, sub, aud, enc span
	hasIdent, differ := false, false
	var xff, fwd []byte
	x.flags = x.flags[:0]
	for _, h := range hs {
		f := x.flagsOf(h.Name)
		x.flags = append(x.flags, f)
		switch {
		case f&fAuth != 0:
			r.Credentials++
			id, ok := x.authIdentity(h.Value, r, &iss, &sub, &aud)
			if ok {
				if hasIdent && string(x.out[ident.off:ident.off+ident.n]) != string(x.out[id.off:id.off+id.n]) {
					differ = true
				}
				if !hasIdent {
					ident, hasIdent = id, true
				}
			}
		case f&fClientCert != 0:
			if len(h.Value) > 0 {
				r.Credentials++
			}
		case f&fXFF != 0:
			if xff == nil {
				xff = h.Value
			}
		case f&fForwarded != 0:
			if fwd == nil {
				fwd = h.Value
			}
		case f&fEncoding != 0:
			enc = x.appendSpan(h.Value)
		}
	}
	r.Multiple = r.Credentials > 1 || differ
	if r.HasJWT {
		t := ts.UnixNano()
		r.NotYetValid = r.JWT.HasNbf && t < r.JWT.Nbf
		r.Expired = r.JWT.HasExp && t >= r.JWT.Exp
	}
	if a, ok := forwardedFor(xff, fwd); ok {
		r.Origin = a
	}
	tpl := span{off: len(x.out)}
	x.out, r.TemplateChanged = x.template(x.out, path)
	tpl.n = len(x.out) - tpl.off
	hdr := x.headersJSON(hs)

	// Slice at the end: x.out may have moved while growing.
	r.Template = x.bytes(tpl)
	r.Headers = x.bytes(hdr)
	r.ContentEncoding = x.bytes(enc)
	if hasIdent {
		r.Identification = x.bytes(ident)
	}
	if r.HasJWT {
		r.JWT.Iss, r.JWT.Sub, r.JWT.Aud = x.bytes(iss), x.bytes(sub), x.bytes(aud)
	}
	x.hdrs = hs[:0]
	return r
}

// Response derives the fields of a response with header fields hs.
func (x *Extractor) Response(hs []Header) *Response {
	hs = hs[:min(len(hs), maxHeaders)]
	x.out = x.out[:0]
	r := &x.resp
	*r = Response{}
	var enc span
	x.flags = x.flags[:0]
	for _, h := range hs {
		f := x.flagsOf(h.Name)
		x.flags = append(x.flags, f)
		if f&fEncoding != 0 {
			enc = x.appendSpan(h.Value)
		}
	}
	hdr := x.headersJSON(hs)
	r.Headers = x.bytes(hdr)
	r.ContentEncoding = x.bytes(enc)
	x.hdrs = hs[:0]
	return r
}

func (x *Extractor) appendSpan(b []byte) span {
	off := len(x.out)
	x.out = appendValidUTF8(x.out, b)
	return span{off, len(x.out) - off}
}

// bytes returns the span of x.out, nil when empty.
func (x *Extractor) bytes(s span) []byte {
	if s.n == 0 {
		return nil
	}
	return x.out[s.off : s.off+s.n : s.off+s.n]
}

// authIdentity parses one Authorization value: a Basic login or a Bearer
// JWT (whose claims are recorded in r for the first one). The identity is
// appended to x.out.
func (x *Extractor) authIdentity(v []byte, r *Request, iss, sub, aud *span) (span, bool) {
	scheme, cred := splitScheme(v)
	switch {
	case eqFold(scheme, "basic"):
		login, ok := x.basicLogin(cred)
		if !ok {
			return span{}, false
		}
		return x.appendSpan(login), true
	case eqFold(scheme, "bearer"):
		c, ok := x.jwt.decode(cred)
		if !ok {
			return span{}, false
		}
		if !r.HasJWT {
			r.JWT, r.HasJWT = c, true
			*iss, *sub, *aud = x.appendSpan(c.Iss), x.appendSpan(c.Sub), x.appendSpan(c.Aud)
		}
		if len(c.Sub) == 0 {
			return span{}, false
		}
		return x.appendSpan(c.Sub), true
	}
	return span{}, false
}

// basicLogin decodes "user:password" in base64 and returns the user (in
// x.tmp).
func (x *Extractor) basicLogin(cred []byte) ([]byte, bool) {
	cred = trimSpace(cred)
	if len(cred) == 0 || len(cred) > 4096 {
		return nil, false
	}
	n := b64std.DecodedLen(len(cred))
	if cap(x.tmp) < n {
		x.tmp = make([]byte, n)
	}
	m, err := b64std.Decode(x.tmp[:n], cred)
	if err != nil {
		return nil, false
	}
	dec := x.tmp[:m]
	i := indexByte(dec, ':')
	if i < 0 {
		return nil, false
	}
	return dec[:min(i, maxClaimBytes)], i > 0
}

// splitScheme splits "Scheme credentials".
func splitScheme(v []byte) (scheme, cred []byte) {
	v = trimSpace(v)
	for i, c := range v {
		if c == ' ' || c == '\t' {
			return v[:i], trimSpace(v[i+1:])
		}
	}
	return v, nil
}

func eqFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
