package httpfields

import (
	"bytes"
	"encoding/base64"
	"unicode/utf8"
)

// b64std decodes Basic credentials: standard base64, padded or not.
var b64std = b64{}

type b64 struct{}

func (b64) DecodedLen(n int) int { return base64.StdEncoding.DecodedLen(n) + 3 }

func (b64) Decode(dst, src []byte) (int, error) {
	if len(src)%4 == 0 {
		return base64.StdEncoding.Decode(dst, src)
	}
	return base64.RawStdEncoding.Decode(dst, src)
}

// maxCookiePairs caps the cookies hashed one by one in a Cookie or
// Set-Cookie value; the rest is hashed as one.
const maxCookiePairs = 64

// hashLen is the number of hex digits of a redaction hash (64 bits).
const hashLen = 16

// headersJSON appends the stored header set of hs (flags in x.flags) to
// x.out as a JSON object. Repeated names are joined with ", " in order
// (Set-Cookie with "\n", as its values may hold commas).
func (x *Extractor) headersJSON(hs []Header) span {
	off := len(x.out)
	n := 0
	for i := range hs {
		f := x.flags[i]
		if f&fKeep == 0 || f&fDone != 0 {
			continue
		}
		if n == 0 {
			x.out = append(x.out, '{')
		} else {
			x.out = append(x.out, ',')
		}
		n++
		x.out = append(x.out, '"')
		x.out = appendJSONLower(x.out, hs[i].Name)
		x.out = append(x.out, '"', ':', '"')
		x.out = x.appendValue(x.out, f, hs[i].Value)
		for j := i + 1; j < len(hs); j++ {
			if x.flags[j]&fDone == 0 && eqFoldBytes(hs[j].Name, hs[i].Name) {
				x.flags[j] |= fDone
				if f&fSetCookie != 0 {
					x.out = append(x.out, '\\', 'n')
				} else {
					x.out = append(x.out, ',', ' ')
				}
				x.out = x.appendValue(x.out, f, hs[j].Value)
			}
		}
		x.out = append(x.out, '"')
	}
	if n == 0 {
		return span{off: off}
	}
	x.out = append(x.out, '}')
	return span{off, len(x.out) - off}
}

// appendValue appends a header value, redacted per f, JSON-escaped
// (without quotes).
func (x *Extractor) appendValue(dst []byte, f hflag, v []byte) []byte {
	v = trimSpace(v)
	switch {
	case f&(fAuth|fProxyAuth) != 0:
		// "Scheme hmac:…": the scheme tells Basic from Bearer; the hash
		// lets equal credentials be matched. Claims have their columns.
		scheme, cred := splitScheme(v)
		if cred == nil {
			return x.appendHash(dst, scheme)
		}
		dst = appendJSONEscaped(dst, scheme[:min(len(scheme), 32)])
		dst = append(dst, ' ')
		return x.appendHash(dst, cred)
	case f&fCookie != 0:
		return x.appendCookies(dst, v, false)
	case f&fSetCookie != 0:
		return x.appendCookies(dst, v, true)
	case f&fRedact != 0:
		return x.appendHash(dst, v)
	}
	return appendJSONEscaped(dst, v)
}

// appendCookies redacts "a=1; b=2" as "a=hmac:…; b=hmac:…" (names kept).
// For Set-Cookie only the first pair is the cookie: its attributes (Path,
// Expires, HttpOnly…) are kept as they are.
func (x *Extractor) appendCookies(dst, v []byte, set bool) []byte {
	for n := 0; len(v) > 0; n++ {
		if n == maxCookiePairs {
			return x.appendHash(dst, v)
		}
		pair := v
		if i := indexByte(v, ';'); i >= 0 {
			pair, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		if n > 0 {
			dst = append(dst, ';', ' ')
		}
		if set && n > 0 {
			dst = appendJSONEscaped(dst, trimSpace(pair))
			continue
		}
		pair = trimSpace(pair)
		if i := indexByte(pair, '='); i >= 0 {
			dst = appendJSONEscaped(dst, pair[:i+1])
			dst = x.appendHash(dst, pair[i+1:])
		} else {
			dst = x.appendHash(dst, pair)
		}
		v = trimSpace(v)
	}
	return dst
}

// appendHash appends "hmac:" and the first 64 bits of HMAC-SHA256(salt, v)
// in hex.
func (x *Extractor) appendHash(dst, v []byte) []byte {
	x.mac.Reset()
	x.mac.Write(v)
	sum := x.mac.Sum(x.sum[:0])
	dst = append(dst, "hmac:"...)
	for _, c := range sum[:hashLen/2] {
		dst = append(dst, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONLower appends a header name, escaped and ASCII-lower-cased.
func appendJSONLower(dst, name []byte) []byte {
	start := len(dst)
	dst = appendJSONEscaped(dst, name)
	for i := start; i < len(dst); i++ {
		if c := dst[i]; c >= 'A' && c <= 'Z' {
			dst[i] = c + 'a' - 'A'
		}
	}
	return dst
}

// appendJSONEscaped appends b escaped for a JSON string (no quotes). Invalid
// UTF-8 becomes U+FFFD so the result is always valid JSON and UTF-8; NUL
// too, as jsonb rejects \u0000. Runs of plain ASCII are copied at once.
func appendJSONEscaped(dst, b []byte) []byte {
	for i := 0; i < len(b); {
		j := i
		for j < len(b) && b[j] >= 0x20 && b[j] < 0x7f && b[j] != '"' && b[j] != '\\' {
			j++
		}
		dst = append(dst, b[i:j]...)
		if i = j; i == len(b) {
			break
		}
		c := b[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == 0:
				dst = append(dst, `\ufffd`...)
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, b[i:i+size]...)
		}
		i += size
	}
	return dst
}

// appendValidUTF8 appends b with invalid UTF-8 and NUL bytes replaced by
// U+FFFD (storable in a text column and a protobuf string). Valid input
// without NUL is copied at once.
func appendValidUTF8(dst, b []byte) []byte {
	if bytes.IndexByte(b, 0) < 0 && utf8.Valid(b) {
		return append(dst, b...)
	}
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c == 0 {
				dst = append(dst, "\uFFFD"...)
			} else {
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, "\uFFFD"...)
		} else {
			dst = append(dst, b[i:i+size]...)
		}
		i += size
	}
	return dst
}

func eqFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
