package pcapgen

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Header is one extra HTTP header line.
type Header struct {
	Name, Value string
}

// Exchange describes one HTTP/1.1 request and its response.
type Exchange struct {
	// Method is the request method (default GET).
	Method string
	// Path is the request path (default "/").
	Path string
	// Query is the raw query string without '?' (empty: none).
	Query string
	// Host is the Host header (default: the server address).
	Host string
	// Status is the response status code (default 200).
	Status int
	// ReqBody and RespBody are body sizes in bytes. RespBody is forced to
	// 0 for 1xx, 204 and 304 responses and for HEAD requests.
	ReqBody, RespBody int
	// Chunked sends the response body with Transfer-Encoding: chunked.
	Chunked bool
	// ReqChunked sends the request body with Transfer-Encoding: chunked.
	ReqChunked bool
	// ChunkSize is the chunk size for chunked bodies (default 4096).
	ChunkSize int
	// UserAgent is the User-Agent header (default "orbweaver-pcapgen/1").
	UserAgent string
	// ContentType is the Content-Type of both bodies (default
	// "application/json").
	ContentType string
	// RequestID is the x-request-id header of request and response
	// (default: derived deterministically from the connection).
	RequestID string
	// TraceParent adds a W3C traceparent header to the request.
	TraceParent bool
	// Headers are extra request headers; RespHeaders extra response ones.
	Headers, RespHeaders []Header
	// ServerDelay is the server think time between the end of the request
	// and the start of the response (default 500µs).
	ServerDelay time.Duration
}

// Truth is the ground truth of one generated exchange. Times are those of
// captured data segments (originals, not retransmissions).
type Truth struct {
	ClientIP   string `json:"client_ip"`
	ServerIP   string `json:"server_ip"`
	ClientPort int    `json:"client_port"`
	ServerPort int    `json:"server_port"`
	Method     string `json:"method"`
	Path       string `json:"path"`
	Query      string `json:"query"`
	// Status is 0 when no response was sent.
	Status           int    `json:"status"`
	RequestBodySize  int    `json:"request_body_size"`
	ResponseBodySize int    `json:"response_body_size"`
	Chunked          bool   `json:"chunked,omitempty"`
	RequestID        string `json:"request_id,omitempty"`
	// RequestTime and RequestEndTime are the first and last captured
	// segments of the request; ResponseTime and ResponseEndTime those of
	// the response (zero when there is no response).
	RequestTime     time.Time `json:"request_time"`
	RequestEndTime  time.Time `json:"request_end_time"`
	ResponseTime    time.Time `json:"response_time,omitzero"`
	ResponseEndTime time.Time `json:"response_end_time,omitzero"`
	// CaptureGap is set when a segment of this exchange is missing from
	// the capture.
	CaptureGap bool `json:"capture_gap,omitempty"`
}

// normalize fills defaults in.
func (ex Exchange) normalize(c *Conn) Exchange {
	if ex.Method == "" {
		ex.Method = http.MethodGet
	}
	if ex.Path == "" {
		ex.Path = "/"
	}
	if ex.Host == "" {
		ex.Host = c.server.String()
	}
	if ex.Status == 0 {
		ex.Status = http.StatusOK
	}
	if ex.ChunkSize <= 0 {
		ex.ChunkSize = 4096
	}
	if ex.UserAgent == "" {
		ex.UserAgent = "orbweaver-pcapgen/1"
	}
	if ex.ContentType == "" {
		ex.ContentType = "application/json"
	}
	if ex.ServerDelay <= 0 {
		ex.ServerDelay = 500 * time.Microsecond
	}
	if ex.Method == http.MethodHead || ex.Status < 200 || ex.Status == http.StatusNoContent || ex.Status == http.StatusNotModified {
		ex.RespBody = 0
		ex.Chunked = false
	}
	if ex.ReqBody == 0 {
		ex.ReqChunked = false
	}
	if ex.RequestID == "" {
		h := c.hash ^ uint64(c.exchanges+1)*0x9e3779b97f4a7c15
		ex.RequestID = fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", uint32(h>>32), uint16(h>>16), uint16(h)&0xfff, uint16(h>>4)&0xfff, (h*0xff51afd7ed558ccd)&0xffffffffffff)
	}
	return ex
}

// target returns the request target.
func (ex *Exchange) target() string {
	if ex.Query == "" {
		return ex.Path
	}
	return ex.Path + "?" + ex.Query
}

// appendRequest appends the request bytes for ex (normalised) to b.
func (c *Conn) appendRequest(b []byte, ex *Exchange) []byte {
	b = fmt.Appendf(b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nAccept: */*\r\nx-request-id: %s\r\n",
		ex.Method, ex.target(), ex.Host, ex.UserAgent, ex.RequestID)
	if ex.TraceParent {
		h := c.hash * uint64(c.exchanges+7)
		b = fmt.Appendf(b, "traceparent: 00-%016x%016x-%016x-01\r\n", c.hash, h, h^0x5bd1e995)
	}
	for _, h := range ex.Headers {
		b = fmt.Appendf(b, "%s: %s\r\n", h.Name, h.Value)
	}
	switch {
	case ex.ReqBody > 0 && ex.ReqChunked:
		b = fmt.Appendf(b, "Content-Type: %s\r\nTransfer-Encoding: chunked\r\n", ex.ContentType)
	case ex.ReqBody > 0 || ex.Method == http.MethodPost || ex.Method == http.MethodPut || ex.Method == http.MethodPatch:
		if ex.ReqBody > 0 {
			b = fmt.Appendf(b, "Content-Type: %s\r\n", ex.ContentType)
		}
		b = fmt.Appendf(b, "Content-Length: %d\r\n", ex.ReqBody)
	}
	b = append(b, "\r\n"...)
	return appendBody(b, ex.ReqBody, ex.ReqChunked, ex.ChunkSize, 'q')
}

// appendResponse appends the response bytes for ex (normalised) to b.
func (c *Conn) appendResponse(b []byte, ex *Exchange) []byte {
	text := http.StatusText(ex.Status)
	if text == "" {
		text = "Status " + strconv.Itoa(ex.Status)
	}
	b = fmt.Appendf(b, "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: orbweaver-demo\r\n", ex.Status, text, c.Now().UTC().Format(http.TimeFormat))
	noBody := ex.Status < 200 || ex.Status == http.StatusNoContent || ex.Status == http.StatusNotModified
	switch {
	case noBody:
	case ex.Chunked:
		b = fmt.Appendf(b, "Content-Type: %s\r\nTransfer-Encoding: chunked\r\n", ex.ContentType)
	default:
		if ex.RespBody > 0 {
			b = fmt.Appendf(b, "Content-Type: %s\r\n", ex.ContentType)
		}
		b = fmt.Appendf(b, "Content-Length: %d\r\n", ex.RespBody)
	}
	b = fmt.Appendf(b, "x-request-id: %s\r\n", ex.RequestID)
	for _, h := range ex.RespHeaders {
		b = fmt.Appendf(b, "%s: %s\r\n", h.Name, h.Value)
	}
	b = append(b, "\r\n"...)
	if ex.Method == http.MethodHead {
		return b
	}
	return appendBody(b, ex.RespBody, ex.Chunked, ex.ChunkSize, 'r')
}

// appendBody appends a JSON-looking body of exactly n bytes, chunk-encoded
// when chunked.
func appendBody(b []byte, n int, chunked bool, chunkSize int, fill byte) []byte {
	if !chunked {
		return appendFiller(b, n, fill)
	}
	body := appendFiller(nil, n, fill)
	for len(body) > 0 {
		k := min(chunkSize, len(body))
		b = strconv.AppendInt(b, int64(k), 16)
		b = append(b, "\r\n"...)
		b = append(b, body[:k]...)
		b = append(b, "\r\n"...)
		body = body[k:]
	}
	return append(b, "0\r\n\r\n"...)
}

// appendFiller appends n bytes shaped like {"data":"abc...xyzabc..."} (or
// plain filler when n is too small).
func appendFiller(b []byte, n int, fill byte) []byte {
	const pre, post = `{"data":"`, `"}`
	const alphabet = "abcdefghijklmnopqrstuvwxyz"
	if n < len(pre)+len(post) {
		for range n {
			b = append(b, fill)
		}
		return b
	}
	b = slices.Grow(b, n)
	b = append(b, pre...)
	m := n - len(pre) - len(post)
	start := len(b)
	// Grow the a..z pattern by copying what is already there; copied
	// lengths are multiples of 26 so the pattern continues seamlessly.
	for l := 0; l < m; l = len(b) - start {
		if l < len(alphabet) {
			b = append(b, alphabet[:min(len(alphabet), m-l)]...)
			continue
		}
		b = append(b, b[start:start+min(m-l, l/len(alphabet)*len(alphabet))]...)
	}
	return append(b, post...)
}

// Request sends the request of ex from the client and returns its truth
// with Status 0 (no response yet). Use Response to answer it later, e.g.
// for pipelining.
func (c *Conn) Request(ex Exchange) (Exchange, Truth) {
	ex = ex.normalize(c)
	c.exchanges++
	c.scratch = c.appendRequest(c.scratch[:0], &ex)
	c.Client(c.scratch)
	st := c.lastSend
	return ex, Truth{
		ClientIP:        c.client.Addr().String(),
		ServerIP:        c.server.Addr().String(),
		ClientPort:      int(c.client.Port()),
		ServerPort:      int(c.server.Port()),
		Method:          ex.Method,
		Path:            ex.Path,
		Query:           ex.Query,
		RequestBodySize: ex.ReqBody,
		RequestID:       ex.RequestID,
		RequestTime:     time.Unix(0, st.first).UTC(),
		RequestEndTime:  time.Unix(0, st.last).UTC(),
		CaptureGap:      st.lost,
	}
}

// Response sends the response to a request previously sent with Request
// (ex is the normalised exchange Request returned) and completes t.
func (c *Conn) Response(ex Exchange, t Truth) Truth {
	c.scratch = c.appendResponse(c.scratch[:0], &ex)
	c.Server(c.scratch)
	st := c.lastSend
	t.Status = ex.Status
	t.ResponseBodySize = ex.RespBody
	t.Chunked = ex.Chunked
	t.ResponseTime = time.Unix(0, st.first).UTC()
	t.ResponseEndTime = time.Unix(0, st.last).UTC()
	t.CaptureGap = t.CaptureGap || st.lost
	return t
}

// HTTP writes a request and, after ex.ServerDelay, its response, and
// returns the exchange's ground truth.
func (c *Conn) HTTP(ex Exchange) Truth {
	ex, t := c.Request(ex)
	c.Advance(ex.ServerDelay)
	return c.Response(ex, t)
}
