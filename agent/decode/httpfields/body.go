package httpfields

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/andybalholm/brotli"
)

// maxCodings caps the content codings undone on one body.
const maxCodings = 3

// bodyDecoder holds reusable decompressors and buffers.
type bodyDecoder struct {
	src  bytes.Reader
	gz   *gzip.Reader
	zl   io.ReadCloser
	fl   io.ReadCloser
	br   *brotli.Reader
	a, b []byte
	text []byte
}

// Body is a decoded body.
type Body struct {
	// Text is the body for display: decoded from its content codings when
	// they are known (gzip, x-gzip, deflate, br, identity), else the raw
	// bytes; at most BodyMaxBytes before invalid UTF-8 and NUL bytes are
	// replaced by U+FFFD. It aliases the Extractor or raw.
	Text []byte
	// Size is the number of decoded bytes (before the replacement).
	Size int
	// Truncated is set when the raw bytes were cut at capture or the
	// decoded body was longer than BodyMaxBytes.
	Truncated bool
	// Decoded is false when a coding was unknown or the data was corrupt
	// before any byte could be decoded (Text is then the raw bytes).
	Decoded bool
}

// DecodeBody decodes raw, the first bytes of a body (cut says whether some
// were not kept), per the Content-Encoding value enc. The output never
// exceeds BodyMaxBytes, whatever the compression ratio: decoding stops
// there. A body cut inside compressed data keeps what could be decoded.
func (x *Extractor) DecodeBody(enc string, raw []byte, cut bool) Body {
	d := &x.body
	out := Body{Truncated: cut, Decoded: true}
	data := raw
	if len(data) > x.bodyMax {
		data, out.Truncated = data[:x.bodyMax], true
	}
	var codings [maxCodings]string
	n := 0
	for e := enc; len(e) > 0; {
		c := e
		if i := strings.IndexByte(e, ','); i >= 0 {
			c, e = e[:i], e[i+1:]
		} else {
			e = ""
		}
		c = strings.TrimSpace(c)
		if c == "" || strings.EqualFold(c, "identity") {
			continue
		}
		if n == maxCodings {
			out.Decoded = false
			n = 0
			break
		}
		codings[n] = c
		n++
	}
	cur := data
	// Codings are listed in the order applied: undo them from the last.
	for k := n - 1; k >= 0; k-- {
		dst := &d.a
		if k%2 == 1 {
			dst = &d.b
		}
		dec, trunc, ok := d.decode(codings[k], cur, x.bodyMax, *dst)
		*dst = dec[:0]
		if !ok {
			out.Decoded = false
			cur = data
			break
		}
		cur = dec
		out.Truncated = out.Truncated || trunc
	}
	out.Size = len(cur)
	if bytes.IndexByte(cur, 0) < 0 && utf8.Valid(cur) {
		out.Text = cur // no copy: valid as it is
		return out
	}
	d.text = appendValidUTF8(d.text[:0], cur)
	out.Text = d.text
	return out
}

// decode undoes one coding of src into buf (reused), reading at most max
// bytes of output. ok is false for an unknown coding or when nothing could
// be decoded from corrupt data.
func (d *bodyDecoder) decode(coding string, src []byte, max int, buf []byte) (out []byte, truncated, ok bool) {
	d.src.Reset(src)
	var r io.Reader
	switch {
	case strings.EqualFold(coding, "gzip") || strings.EqualFold(coding, "x-gzip"):
		if d.gz == nil {
			d.gz = new(gzip.Reader)
		}
		if err := d.gz.Reset(&d.src); err != nil {
			return buf, false, false
		}
		r = d.gz
	case strings.EqualFold(coding, "deflate"):
		// RFC 9110 deflate is zlib-wrapped; some servers send raw deflate.
		if len(src) >= 2 && src[0]&0x0f == 8 && (uint16(src[0])<<8|uint16(src[1]))%31 == 0 {
			var err error
			if d.zl == nil {
				d.zl, err = zlib.NewReader(&d.src)
			} else {
				err = d.zl.(zlib.Resetter).Reset(&d.src, nil)
			}
			if err != nil {
				return buf, false, false
			}
			r = d.zl
		} else {
			if d.fl == nil {
				d.fl = flate.NewReader(&d.src)
			} else if err := d.fl.(flate.Resetter).Reset(&d.src, nil); err != nil {
				return buf, false, false
			}
			r = d.fl
		}
	case strings.EqualFold(coding, "br"):
		if d.br == nil {
			d.br = brotli.NewReader(&d.src)
		} else if err := d.br.Reset(&d.src); err != nil {
			return buf, false, false
		}
		r = d.br
	default:
		return buf, false, false
	}
	if cap(buf) < max+1 {
		buf = make([]byte, max+1)
	}
	buf = buf[:max+1]
	n, err := io.ReadFull(r, buf)
	switch {
	case n > max:
		return buf[:max], true, true
	case err == io.EOF || err == io.ErrUnexpectedEOF || err == nil:
		// ErrUnexpectedEOF here is the end of the output (ReadFull).
		return buf[:n], false, true
	case n > 0:
		return buf[:n], true, true // corrupt or cut after some output
	}
	return buf[:0], false, false
}
