// Package model holds the call types that decoders produce and every other
// part of Orbweaver consumes. It has no dependencies so that decoders stay
// independent of transport and storage.
package model

import (
	"net/netip"
	"time"
)

// ParseStatus tells how complete a call is. The values are stored as text in
// the parse_status column and are part of the public schema.
type ParseStatus string

const (
	// StatusOK: request and response were both seen completely.
	StatusOK ParseStatus = "ok"
	// StatusNoResponse: the request was seen; the connection ended or timed
	// out before a response.
	StatusNoResponse ParseStatus = "no_response"
	// StatusNoRequest: a response was seen without its request (capture
	// joined the connection mid-way).
	StatusNoRequest ParseStatus = "no_request"
	// StatusGap: bytes of this exchange were lost in capture; sizes and
	// timings may be incomplete.
	StatusGap ParseStatus = "gap"
	// StatusTruncated: the exchange was cut by a memory cap or by the end of
	// the capture in the middle of a message.
	StatusTruncated ParseStatus = "truncated"
	// StatusUpgraded: the request switched protocols (101); the connection
	// is no longer parsed as HTTP.
	StatusUpgraded ParseStatus = "upgraded"
)

// HTTPCall is one HTTP/1.x request/response exchange. Field names in JSON
// are the column names of the http_calls table.
//
// Zero times mean "not seen". Status is 0 when no response was seen.
type HTTPCall struct {
	ClientAddr netip.AddrPort `json:"-"`
	ServerAddr netip.AddrPort `json:"-"`

	RequestStart  time.Time `json:"-"`
	RequestEnd    time.Time `json:"-"`
	ResponseStart time.Time `json:"-"`
	ResponseEnd   time.Time `json:"-"`

	Method      string `json:"method"`
	Host        string `json:"host"`
	Path        string `json:"path"`
	Query       string `json:"query"`
	HTTPVersion string `json:"http_version"`
	Status      int    `json:"-"`

	RequestHeaderSize  int64 `json:"request_header_size"`
	RequestBodySize    int64 `json:"request_body_size"`
	ResponseHeaderSize int64 `json:"response_header_size"`
	ResponseBodySize   int64 `json:"response_body_size"`

	RequestContentType  string `json:"request_content_type"`
	ResponseContentType string `json:"response_content_type"`
	UserAgent           string `json:"user_agent"`
	XForwardedFor       string `json:"x_forwarded_for"`
	XRequestID          string `json:"x_request_id"`
	Traceparent         string `json:"traceparent"`

	ParseStatus ParseStatus `json:"parse_status"`
}

// Duration is response end minus request start, or 0 when the call has no
// response end.
func (c *HTTPCall) Duration() time.Duration {
	if c.ResponseEnd.IsZero() || c.RequestStart.IsZero() {
		return 0
	}
	return c.ResponseEnd.Sub(c.RequestStart)
}
