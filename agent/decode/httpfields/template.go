package httpfields

import (
	"bytes"
	"unicode/utf8"
)

// template appends the route template of path to dst: the first matching
// template rule, else the built-in normalization of each segment:
//
//	digits only                                  → {id}
//	a UUID (8-4-4-4-12 hex digits)               → {uuid}
//	16 or more hex digits, at least one a digit  → {hash}
//	20 or more token characters (letters, digits, - _ . ~ = + %)
//	with at least two digits and one letter, and
//	at most two '-' or '_'                       → {token}
//
// changed is false when the template is the path itself.
func (x *Extractor) template(dst, path []byte) (out []byte, changed bool) {
	for _, r := range x.rules {
		if m := r.re.FindSubmatchIndex(path); m != nil {
			return appendValidUTF8(dst, r.re.Expand(x.tmp[:0], r.template, path, m)), true
		}
	}
	start := len(dst)
	for i := 0; i < len(path); {
		j := i
		for j < len(path) && path[j] != '/' {
			j++
		}
		seg := path[i:j]
		if p := placeholder(seg); p != "" {
			dst = append(dst, p...)
			changed = true
		} else {
			dst = append(dst, seg...)
		}
		if j < len(path) {
			dst = append(dst, '/')
		}
		i = j + 1
	}
	if !changed {
		return dst[:start], false
	}
	if t := dst[start:]; bytes.IndexByte(t, 0) >= 0 || !utf8.Valid(t) {
		// Rare: sanitize through the scratch buffer.
		x.tmp = append(x.tmp[:0], t...)
		return appendValidUTF8(dst[:start], x.tmp), true
	}
	return dst, true
}

// placeholder returns the placeholder for a path segment, or "".
func placeholder(seg []byte) string {
	n := len(seg)
	if n == 0 {
		return ""
	}
	digits, letters, hex, seps, token := 0, 0, 0, 0, true
	for _, c := range seg {
		switch {
		case c >= '0' && c <= '9':
			digits++
			hex++
		case c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F':
			letters++
			hex++
		case c >= 'g' && c <= 'z' || c >= 'G' && c <= 'Z':
			letters++
		case c == '-' || c == '_':
			seps++
		case c == '.' || c == '~' || c == '=' || c == '+' || c == '%':
		default:
			token = false
		}
	}
	switch {
	case digits == n:
		return "{id}"
	case n == 36 && isUUID(seg):
		return "{uuid}"
	case hex == n && n >= 16 && digits > 0:
		return "{hash}"
	case token && n >= 20 && digits >= 2 && letters >= 1 && seps <= 2:
		return "{token}"
	}
	return ""
}

func isUUID(b []byte) bool {
	for i, c := range b {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}
