package httpfields

import (
	"bytes"
	"encoding/base64"
	"unicode/utf8"
)

// maxJWTBytes caps the token length decoded; longer tokens are not decoded
// (their scheme is still recorded).
const maxJWTBytes = 16 << 10

// maxClaimBytes caps each string claim kept (iss, sub, aud).
const maxClaimBytes = 512

// maxJSONDepth caps the nesting skipped inside the claims object.
const maxJSONDepth = 32

// Claims are the registered JWT claims kept from a token payload. It is
// decoded without verification: nothing here is trusted, only shown.
// Byte slices alias the decoder's buffer.
type Claims struct {
	Iss, Sub []byte
	// Aud is the audience; several audiences are joined with ",".
	Aud []byte
	// Iat, Nbf and Exp are Unix times in nanoseconds (NumericDate may
	// have a fraction), valid when the matching Has flag is set.
	Iat, Nbf, Exp          int64
	HasIat, HasNbf, HasExp bool
}

// jwtDecoder decodes JWT payloads into a reused buffer. Not safe for
// concurrent use.
type jwtDecoder struct {
	payload []byte // base64url-decoded payload
	strs    []byte // unescaped claim strings
}

// decode decodes the claims of a compact JWS "header.payload.signature".
// The signature is never looked at. ok is false when token is not a JWT
// with a JSON object payload. The result aliases d until the next call.
func (d *jwtDecoder) decode(token []byte) (c Claims, ok bool) {
	if len(token) > maxJWTBytes {
		return Claims{}, false
	}
	i := indexByte(token, '.')
	if i <= 0 {
		return Claims{}, false
	}
	rest := token[i+1:]
	j := indexByte(rest, '.')
	if j <= 0 || indexByte(rest[j+1:], '.') >= 0 {
		return Claims{}, false
	}
	p := rest[:j]
	for len(p) > 0 && p[len(p)-1] == '=' {
		p = p[:len(p)-1] // tolerate padding
	}
	n := base64.RawURLEncoding.DecodedLen(len(p))
	if cap(d.payload) < n {
		d.payload = make([]byte, n)
	}
	d.payload = d.payload[:n]
	m, err := base64.RawURLEncoding.Decode(d.payload, p)
	if err != nil {
		return Claims{}, false
	}
	d.strs = d.strs[:0]
	return d.claims(d.payload[:m])
}

// span is a part of d.strs.
type span struct{ off, n int }

// claims scans a JSON object for the registered claims. Unknown members are
// skipped; duplicate members keep the last value.
func (d *jwtDecoder) claims(b []byte) (Claims, bool) {
	var c Claims
	var iss, sub, aud span
	var hasIss, hasSub, hasAud bool
	s := scanner{b: b}
	s.ws()
	if !s.eat('{') {
		return c, false
	}
	s.ws()
	if s.eat('}') {
		return c, s.end()
	}
	for {
		s.ws()
		keyStart := len(d.strs)
		var ok bool
		if d.strs, ok = s.str(d.strs); !ok {
			return Claims{}, false
		}
		key := claimKey(d.strs[keyStart:])
		d.strs = d.strs[:keyStart]
		s.ws()
		if !s.eat(':') {
			return Claims{}, false
		}
		s.ws()
		switch key {
		case kIss, kSub:
			sp, ok := d.strValue(&s)
			if !ok {
				return Claims{}, false
			}
			if key == kIss {
				iss, hasIss = sp, true
			} else {
				sub, hasSub = sp, true
			}
		case kAud:
			sp, ok := d.audValue(&s)
			if !ok {
				return Claims{}, false
			}
			aud, hasAud = sp, true
		case kIat, kNbf, kExp:
			v, has, ok := s.numericDate()
			if !ok {
				return Claims{}, false
			}
			switch key {
			case kIat:
				c.Iat, c.HasIat = v, has
			case kNbf:
				c.Nbf, c.HasNbf = v, has
			default:
				c.Exp, c.HasExp = v, has
			}
		default:
			if !s.skip(0) {
				return Claims{}, false
			}
		}
		s.ws()
		if s.eat('}') {
			break
		}
		if !s.eat(',') {
			return Claims{}, false
		}
	}
	if !s.end() {
		return Claims{}, false
	}
	if hasIss {
		c.Iss = d.strs[iss.off : iss.off+iss.n]
	}
	if hasSub {
		c.Sub = d.strs[sub.off : sub.off+sub.n]
	}
	if hasAud {
		c.Aud = d.strs[aud.off : aud.off+aud.n]
	}
	return c, true
}

type claim uint8

const (
	kOther claim = iota
	kIss
	kSub
	kAud
	kIat
	kNbf
	kExp
)

func claimKey(b []byte) claim {
	switch string(b) {
	case "iss":
		return kIss
	case "sub":
		return kSub
	case "aud":
		return kAud
	case "iat":
		return kIat
	case "nbf":
		return kNbf
	case "exp":
		return kExp
	}
	return kOther
}

// strValue reads a string claim (other types are skipped and give an empty
// value) into d.strs, capped at maxClaimBytes.
func (d *jwtDecoder) strValue(s *scanner) (span, bool) {
	if s.peek() != '"' {
		return span{off: len(d.strs)}, s.skip(0)
	}
	off := len(d.strs)
	var ok bool
	if d.strs, ok = s.str(d.strs); !ok {
		return span{}, false
	}
	if len(d.strs)-off > maxClaimBytes {
		d.strs = truncUTF8(d.strs[:off+maxClaimBytes], off)
	}
	return span{off, len(d.strs) - off}, true
}

// audValue reads "aud": a string or an array of strings joined with ",".
func (d *jwtDecoder) audValue(s *scanner) (span, bool) {
	if s.peek() != '[' {
		return d.strValue(s)
	}
	s.i++
	off := len(d.strs)
	s.ws()
	if s.eat(']') {
		return span{off, 0}, true
	}
	for {
		s.ws()
		if len(d.strs) > off {
			d.strs = append(d.strs, ',')
		}
		if _, ok := d.strValue(s); !ok {
			return span{}, false
		}
		if len(d.strs)-off > maxClaimBytes {
			d.strs = truncUTF8(d.strs[:off+maxClaimBytes], off)
		}
		s.ws()
		if s.eat(']') {
			return span{off, len(d.strs) - off}, true
		}
		if !s.eat(',') {
			return span{}, false
		}
	}
}

// truncUTF8 drops a partial UTF-8 sequence at the end of b[off:].
func truncUTF8(b []byte, off int) []byte {
	for len(b) > off && !utf8.Valid(b[off:]) {
		b = b[:len(b)-1]
	}
	return b
}

// scanner is a minimal JSON reader over b.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// end reports whether only white space is left.
func (s *scanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// str reads a JSON string and appends it, unescaped, to dst. Invalid UTF-8
// and lone surrogates become U+FFFD.
func (s *scanner) str(dst []byte) ([]byte, bool) {
	if !s.eat('"') {
		return dst, false
	}
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return dst, true
		case c < 0x20:
			return dst, false
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return dst, false
			}
			e := s.b[s.i+1]
			s.i += 2
			switch e {
			case '"', '\\', '/':
				dst = append(dst, e)
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r, ok := s.hex4()
				if !ok {
					return dst, false
				}
				if r >= 0xD800 && r < 0xDC00 && s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
					save := s.i
					s.i += 2
					if r2, ok := s.hex4(); ok && r2 >= 0xDC00 && r2 < 0xE000 {
						r = (r-0xD800)<<10 | (r2 - 0xDC00) + 0x10000
					} else {
						s.i = save
					}
				}
				if r >= 0xD800 && r < 0xE000 {
					r = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, r)
			default:
				return dst, false
			}
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			s.i++
		default:
			r, size := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, "\uFFFD"...)
			} else {
				dst = append(dst, s.b[s.i:s.i+size]...)
			}
			s.i += size
		}
	}
	return dst, false
}

func (s *scanner) hex4() (rune, bool) {
	if s.i+4 > len(s.b) {
		return 0, false
	}
	var r rune
	for _, c := range s.b[s.i : s.i+4] {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	s.i += 4
	return r, true
}

// numericDate reads a NumericDate (seconds since the epoch, possibly with a
// fraction or an exponent-free decimal) as Unix nanoseconds. A value of
// another type is skipped and has is false. Values beyond ±292 years of
// nanoseconds are clamped.
func (s *scanner) numericDate() (ns int64, has, ok bool) {
	c := s.peek()
	if c != '-' && (c < '0' || c > '9') {
		return 0, false, s.skip(0)
	}
	start := s.i
	neg := s.eat('-')
	var sec int64
	digits := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		if sec < 1e11 {
			sec = sec*10 + int64(s.b[s.i]-'0')
		} else {
			sec = 1e11 // far beyond any real date; clamped below
		}
		s.i++
		digits++
	}
	if digits == 0 {
		return 0, false, false
	}
	var frac int64
	if s.eat('.') {
		scale := int64(1e8)
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			frac += int64(s.b[s.i]-'0') * scale
			scale /= 10
			s.i++
			n++
		}
		if n == 0 {
			return 0, false, false
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		// Exponents are legal JSON but never used for dates: skip the
		// number and ignore the claim.
		s.i = start
		return 0, false, s.skip(0)
	}
	const maxSec = 9e9 // year 2255: beyond it nanoseconds overflow soon
	sec = min(sec, maxSec)
	ns = sec*1e9 + frac
	if neg {
		ns = -ns
	}
	return ns, true, true
}

// skip skips one JSON value.
func (s *scanner) skip(depth int) bool {
	if depth > maxJSONDepth {
		return false
	}
	s.ws()
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		for s.i++; s.i < len(s.b); s.i++ {
			switch s.b[s.i] {
			case '\\':
				s.i++
			case '"':
				s.i++
				return true
			}
		}
		return false
	case c == '{' || c == '[':
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		s.i++
		s.ws()
		if s.eat(closer) {
			return true
		}
		for {
			s.ws()
			if c == '{' {
				if !s.skip(depth + 1) {
					return false
				}
				s.ws()
				if !s.eat(':') {
					return false
				}
			}
			if !s.skip(depth + 1) {
				return false
			}
			s.ws()
			if s.eat(closer) {
				return true
			}
			if !s.eat(',') {
				return false
			}
		}
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-' || c >= '0' && c <= '9':
		s.i++
		for s.i < len(s.b) {
			switch c := s.b[s.i]; {
			case c >= '0' && c <= '9', c == '.', c == 'e', c == 'E', c == '+', c == '-':
				s.i++
			default:
				return true
			}
		}
		return true
	}
	return false
}

func (s *scanner) lit(w string) bool {
	if len(s.b)-s.i >= len(w) && string(s.b[s.i:s.i+len(w)]) == w {
		s.i += len(w)
		return true
	}
	return false
}

func indexByte(b []byte, c byte) int { return bytes.IndexByte(b, c) }
