package http1

import (
	"bytes"
	"strings"

	"github.com/orbweaver/orbweaver/agent/decode/httpfields"
)

// verdict is the answer of a start-line check on possibly incomplete input.
type verdict uint8

const (
	vNo   verdict = iota // cannot be a start line
	vMore                // a valid prefix; more bytes needed
	vYes                 // a complete, valid start line
)

// kind is the kind of message a start line begins.
type kind uint8

const (
	kindNone kind = iota
	kindRequest
	kindResponse
)

const maxMethodLen = 24

// requestLine checks "METHOD SP target SP HTTP/1.d (CR)LF" at the start of b.
func requestLine(b []byte) verdict {
	i := 0
	for ; i < len(b); i++ {
		c := b[i]
		if c == ' ' {
			break
		}
		if !(c >= 'A' && c <= 'Z' || i > 0 && (c == '-' || c == '_' || c >= '0' && c <= '9')) || i == maxMethodLen {
			return vNo
		}
	}
	if i == len(b) {
		return vMore
	}
	if i == 0 {
		return vNo
	}
	i++ // SP
	t := i
	for ; i < len(b); i++ {
		c := b[i]
		if c == ' ' {
			break
		}
		if c <= ' ' || c == 0x7F {
			return vNo
		}
	}
	if i == len(b) {
		return vMore
	}
	if i == t {
		return vNo
	}
	i++ // SP
	return versionEOL(b[i:])
}

// versionEOL checks "HTTP/1.d" followed by CRLF or LF.
func versionEOL(b []byte) verdict {
	const v = "HTTP/1."
	n := min(len(b), len(v))
	if string(b[:n]) != v[:n] {
		return vNo
	}
	if len(b) <= len(v) {
		return vMore
	}
	if b[7] < '0' || b[7] > '9' {
		return vNo
	}
	rest := b[8:]
	switch {
	case len(rest) == 0:
		return vMore
	case rest[0] == '\n':
		return vYes
	case rest[0] != '\r':
		return vNo
	case len(rest) == 1:
		return vMore
	case rest[1] == '\n':
		return vYes
	}
	return vNo
}

// statusLine checks "HTTP/1.d SP ddd [SP reason] (CR)LF" at the start of b.
func statusLine(b []byte) verdict {
	const v = "HTTP/1."
	n := min(len(b), len(v))
	if string(b[:n]) != v[:n] {
		return vNo
	}
	if len(b) <= len(v) {
		return vMore
	}
	for i := 7; i < 12; i++ {
		if i == len(b) {
			return vMore
		}
		c := b[i]
		switch {
		case i == 8:
			if c != ' ' {
				return vNo
			}
		case c < '0' || c > '9':
			return vNo
		}
	}
	if len(b) == 12 {
		return vMore
	}
	switch b[12] {
	case '\n':
		return vYes
	case '\r':
		if len(b) == 13 {
			return vMore
		}
		if b[13] == '\n' {
			return vYes
		}
		return vNo
	case ' ':
	default:
		return vNo
	}
	i := bytes.IndexByte(b[13:], '\n')
	if i < 0 {
		for _, c := range b[13:] {
			if c < ' ' && c != '\t' && c != '\r' {
				return vNo
			}
		}
		return vMore
	}
	return vYes
}

// classify checks whether b starts with a start line of a kind allowed by
// want (kindNone: either).
func classify(b []byte, want kind) (kind, verdict) {
	best := vNo
	if want != kindResponse {
		switch requestLine(b) {
		case vYes:
			return kindRequest, vYes
		case vMore:
			best = vMore
		}
	}
	if want != kindRequest {
		switch statusLine(b) {
		case vYes:
			return kindResponse, vYes
		case vMore:
			best = vMore
		}
	}
	return kindNone, best
}

// headerEnd returns the index just past the blank line ending a header block
// ("\r\n\r\n" or "\n\n", or mixes), searching b from `from`, or -1.
func headerEnd(b []byte, from int) int {
	for i := from; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		if i < len(b) && b[i] == '\n' {
			return i + 1
		}
		if i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n' {
			return i + 2
		}
	}
	return -1
}

// headerInfo holds what the parser keeps from a header block. Slices alias
// the block.
type headerInfo struct {
	host, contentType, userAgent, xff, xRequestID, traceparent []byte

	contentLength int64 // -1: absent
	badLength     bool
	chunked       bool
	hasTE         bool

	// fields collects every header field when collect is set (for
	// derived fields), up to httpfields.MaxHeaders.
	collect bool
	fields  []httpfields.Header
}

// parseHeaders scans the header lines after the start line.
func parseHeaders(b []byte, h *headerInfo) {
	h.contentLength = -1
	for len(b) > 0 {
		var line []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			line, b = b, nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			return
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // obsolete line folding: ignored
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue // not a header field: tolerated
		}
		name, value := trimSpace(line[:colon]), trimSpace(line[colon+1:])
		if h.collect && len(h.fields) < httpfields.MaxHeaders {
			h.fields = append(h.fields, httpfields.Header{Name: name, Value: value})
		}
		switch len(name) {
		case 4:
			if eqFold(name, "host") && h.host == nil {
				h.host = value
			}
		case 10:
			if eqFold(name, "user-agent") && h.userAgent == nil {
				h.userAgent = value
			}
		case 11:
			if eqFold(name, "traceparent") && h.traceparent == nil {
				h.traceparent = value
			}
		case 12:
			if eqFold(name, "content-type") && h.contentType == nil {
				h.contentType = value
			} else if eqFold(name, "x-request-id") && h.xRequestID == nil {
				h.xRequestID = value
			}
		case 14:
			if eqFold(name, "content-length") {
				n, ok := parseLength(value)
				switch {
				case !ok:
					h.badLength = true
				case h.contentLength >= 0 && h.contentLength != n:
					h.badLength = true
				default:
					h.contentLength = n
				}
			}
		case 15:
			if eqFold(name, "x-forwarded-for") && h.xff == nil {
				h.xff = value
			}
		case 17:
			if eqFold(name, "transfer-encoding") {
				h.hasTE = true
				// chunked must be the final coding.
				h.chunked = len(value) >= 7 && eqFold(value[len(value)-7:], "chunked")
			}
		}
	}
}

// parseLength parses a Content-Length value. A list of identical values
// ("5, 5") is accepted.
func parseLength(b []byte) (int64, bool) {
	var first int64 = -1
	for len(b) > 0 {
		var part []byte
		if i := bytes.IndexByte(b, ','); i >= 0 {
			part, b = trimSpace(b[:i]), b[i+1:]
		} else {
			part, b = trimSpace(b), nil
		}
		if len(part) == 0 || len(part) > 18 {
			return 0, false
		}
		var n int64
		for _, c := range part {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int64(c-'0')
		}
		if first >= 0 && n != first {
			return 0, false
		}
		first = n
	}
	return first, first >= 0
}

// parseChunkSize parses a chunk-size line (extensions ignored).
func parseChunkSize(line []byte) (int64, bool) {
	line = trimSpace(line)
	var n int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			goto done
		}
		if i == 15 {
			return 0, false
		}
		n = n<<4 | int64(d)
	}
done:
	if i == 0 {
		return 0, false
	}
	if i < len(line) && line[i] != ';' && line[i] != ' ' && line[i] != '\t' {
		return 0, false
	}
	return n, true
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r' || b[len(b)-1] == '\n') {
		b = b[:len(b)-1]
	}
	return b
}

// eqFold reports whether b equals lower (which is lower case ASCII) ignoring
// ASCII case.
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

// str copies b to a string; nil and empty give "".
func str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return string(b)
}

// methodString returns the method as a string, without allocating for the
// common ones.
func methodString(b []byte) string {
	switch string(b) {
	case "GET":
		return "GET"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "HEAD":
		return "HEAD"
	case "OPTIONS":
		return "OPTIONS"
	case "PATCH":
		return "PATCH"
	case "CONNECT":
		return "CONNECT"
	case "TRACE":
		return "TRACE"
	}
	return string(b)
}

func versionString(d byte) string {
	switch d {
	case '0':
		return "1.0"
	case '1':
		return "1.1"
	}
	return "1." + string(rune(d))
}

// strPack copies several byte slices into one string allocation and points
// string fields at its parts (substrings share the allocation).
type strPack struct {
	n     int
	parts [16][]byte
	dst   [16]*string
}

// add schedules b to be copied into *dst.
func (p *strPack) add(dst *string, b []byte) {
	if len(b) == 0 || p.n == len(p.parts) {
		*dst = str(b)
		return
	}
	p.parts[p.n], p.dst[p.n] = b, dst
	p.n++
}

// copy performs the copies.
func (p *strPack) copy() {
	total := 0
	for _, b := range p.parts[:p.n] {
		total += len(b)
	}
	var sb strings.Builder
	sb.Grow(total)
	for _, b := range p.parts[:p.n] {
		sb.Write(b)
	}
	all, off := sb.String(), 0
	for i, b := range p.parts[:p.n] {
		*p.dst[i] = all[off : off+len(b)]
		off += len(b)
	}
}
