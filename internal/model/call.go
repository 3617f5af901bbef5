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

	// Derived fields, computed by the agent (agent/decode/httpfields).

	// Identification is the Basic-auth login, else the JWT subject of a
	// Bearer token; "" when neither.
	Identification string `json:"identification"`
	// Origin is the original client address: the first X-Forwarded-For
	// entry, else Forwarded "for", else the client address. Invalid (zero)
	// when the call has no request.
	Origin netip.Addr `json:"-"`
	// Template is the path as a route template ({id}, {uuid}, {hash},
	// {token} placeholders, or a configured rule).
	Template string `json:"template"`
	// JWT claims of the first Bearer token, decoded without verification
	// (the signature is never kept). Zero times mean absent.
	JWTIssuer    string    `json:"jwt_iss"`
	JWTSubject   string    `json:"jwt_sub"`
	JWTAudience  string    `json:"jwt_aud"` // several audiences joined with ","
	JWTIssuedAt  time.Time `json:"-"`
	JWTNotBefore time.Time `json:"-"`
	JWTExpires   time.Time `json:"-"`
	// TokenNotYetValid: the capture time of the request is before the
	// token's nbf. TokenExpired: it is at or after the token's exp.
	TokenNotYetValid bool `json:"token_not_yet_valid"`
	TokenExpired     bool `json:"token_expired"`
	// CredentialsCount counts Authorization and client-certificate
	// headers; MultipleCredentials is set when there are several or when
	// two name different identities.
	CredentialsCount    int  `json:"credentials_count"`
	MultipleCredentials bool `json:"multiple_credentials"`
	// RequestHeaders and ResponseHeaders are the stored header sets as
	// JSON objects (lower-case names, secrets redacted); "" when none.
	RequestHeaders  string `json:"-"`
	ResponseHeaders string `json:"-"`
	// Content-Encoding values.
	RequestContentEncoding  string `json:"request_content_encoding"`
	ResponseContentEncoding string `json:"response_content_encoding"`
	// Bodies, when body capture is on: decoded for display (valid UTF-8),
	// at most the configured size. *BodyCaptured tells whether the body
	// was captured at all (the columns are NULL otherwise);
	// *BodyDecodedSize is the length of the decoded body kept, and
	// *BodyTruncated is set when the body was longer than the cap.
	RequestBody             string `json:"-"`
	ResponseBody            string `json:"-"`
	RequestBodyCaptured     bool   `json:"-"`
	ResponseBodyCaptured    bool   `json:"-"`
	RequestBodyDecodedSize  int64  `json:"-"`
	ResponseBodyDecodedSize int64  `json:"-"`
	RequestBodyTruncated    bool   `json:"-"`
	ResponseBodyTruncated   bool   `json:"-"`
	// Retransmitted TCP segments counted on each direction while its
	// message was being received (0 when unknown).
	RequestRetransmissions  int64 `json:"request_retransmissions"`
	ResponseRetransmissions int64 `json:"response_retransmissions"`
}

// Duration is response end minus request start, or 0 when the call has no
// response end.
func (c *HTTPCall) Duration() time.Duration {
	if c.ResponseEnd.IsZero() || c.RequestStart.IsZero() {
		return 0
	}
	return c.ResponseEnd.Sub(c.RequestStart)
}
