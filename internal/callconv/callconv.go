// Package callconv converts calls between the decoder model, the wire
// protocol and the JSON Lines output of the offline agent.
package callconv

import (
	"encoding/json"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/model"
)

// ToProto converts a decoded call to its wire form.
func ToProto(c *model.HTTPCall) *orbweaverv1.HttpCall {
	p := &orbweaverv1.HttpCall{
		ClientIp:            addrBytes(c.ClientAddr.Addr()),
		ClientPort:          uint32(c.ClientAddr.Port()),
		ServerIp:            addrBytes(c.ServerAddr.Addr()),
		ServerPort:          uint32(c.ServerAddr.Port()),
		RequestStartNs:      nanos(c.RequestStart),
		RequestEndNs:        nanos(c.RequestEnd),
		ResponseStartNs:     nanos(c.ResponseStart),
		ResponseEndNs:       nanos(c.ResponseEnd),
		Method:              valid(c.Method),
		Host:                valid(c.Host),
		Path:                valid(c.Path),
		Query:               valid(c.Query),
		HttpVersion:         valid(c.HTTPVersion),
		Status:              uint32(max(c.Status, 0)),
		RequestHeaderSize:   c.RequestHeaderSize,
		RequestBodySize:     c.RequestBodySize,
		ResponseHeaderSize:  c.ResponseHeaderSize,
		ResponseBodySize:    c.ResponseBodySize,
		RequestContentType:  valid(c.RequestContentType),
		ResponseContentType: valid(c.ResponseContentType),
		UserAgent:           valid(c.UserAgent),
		XForwardedFor:       valid(c.XForwardedFor),
		XRequestId:          valid(c.XRequestID),
		Traceparent:         valid(c.Traceparent),
		ParseStatus:         valid(string(c.ParseStatus)),

		Identification:          valid(c.Identification),
		OriginIp:                addrBytes(c.Origin),
		Template:                valid(c.Template),
		JwtIss:                  valid(c.JWTIssuer),
		JwtSub:                  valid(c.JWTSubject),
		JwtAud:                  valid(c.JWTAudience),
		JwtIatNs:                nanos(c.JWTIssuedAt),
		JwtNbfNs:                nanos(c.JWTNotBefore),
		JwtExpNs:                nanos(c.JWTExpires),
		TokenNotYetValid:        c.TokenNotYetValid,
		TokenExpired:            c.TokenExpired,
		CredentialsCount:        uint32(max(c.CredentialsCount, 0)),
		MultipleCredentials:     c.MultipleCredentials,
		RequestHeaders:          valid(c.RequestHeaders),
		ResponseHeaders:         valid(c.ResponseHeaders),
		RequestContentEncoding:  valid(c.RequestContentEncoding),
		ResponseContentEncoding: valid(c.ResponseContentEncoding),
		RequestBodyDecodedSize:  c.RequestBodyDecodedSize,
		ResponseBodyDecodedSize: c.ResponseBodyDecodedSize,
		RequestBodyTruncated:    c.RequestBodyTruncated,
		ResponseBodyTruncated:   c.ResponseBodyTruncated,
		RequestRetransmissions:  uint32(min(max(c.RequestRetransmissions, 0), math.MaxUint32)),
		ResponseRetransmissions: uint32(min(max(c.ResponseRetransmissions, 0), math.MaxUint32)),
	}
	if c.RequestBodyCaptured {
		rb := valid(c.RequestBody)
		p.RequestBody = &rb
	}
	if c.ResponseBodyCaptured {
		rb := valid(c.ResponseBody)
		p.ResponseBody = &rb
	}
	return p
}

// valid returns s with invalid UTF-8 replaced by U+FFFD: protobuf strings
// must be valid UTF-8, and one bad byte in a sniffed path must not make a
// whole batch unsendable. Valid strings are returned as they are.
func valid(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// FromProto converts a wire call back to the model.
func FromProto(p *orbweaverv1.HttpCall) *model.HTTPCall {
	return &model.HTTPCall{
		ClientAddr:          netip.AddrPortFrom(bytesAddr(p.GetClientIp()), uint16(p.GetClientPort())),
		ServerAddr:          netip.AddrPortFrom(bytesAddr(p.GetServerIp()), uint16(p.GetServerPort())),
		RequestStart:        fromNanos(p.GetRequestStartNs()),
		RequestEnd:          fromNanos(p.GetRequestEndNs()),
		ResponseStart:       fromNanos(p.GetResponseStartNs()),
		ResponseEnd:         fromNanos(p.GetResponseEndNs()),
		Method:              p.GetMethod(),
		Host:                p.GetHost(),
		Path:                p.GetPath(),
		Query:               p.GetQuery(),
		HTTPVersion:         p.GetHttpVersion(),
		Status:              int(p.GetStatus()),
		RequestHeaderSize:   p.GetRequestHeaderSize(),
		RequestBodySize:     p.GetRequestBodySize(),
		ResponseHeaderSize:  p.GetResponseHeaderSize(),
		ResponseBodySize:    p.GetResponseBodySize(),
		RequestContentType:  p.GetRequestContentType(),
		ResponseContentType: p.GetResponseContentType(),
		UserAgent:           p.GetUserAgent(),
		XForwardedFor:       p.GetXForwardedFor(),
		XRequestID:          p.GetXRequestId(),
		Traceparent:         p.GetTraceparent(),
		ParseStatus:         model.ParseStatus(p.GetParseStatus()),

		Identification:          p.GetIdentification(),
		Origin:                  bytesAddr(p.GetOriginIp()),
		Template:                p.GetTemplate(),
		JWTIssuer:               p.GetJwtIss(),
		JWTSubject:              p.GetJwtSub(),
		JWTAudience:             p.GetJwtAud(),
		JWTIssuedAt:             fromNanos(p.GetJwtIatNs()),
		JWTNotBefore:            fromNanos(p.GetJwtNbfNs()),
		JWTExpires:              fromNanos(p.GetJwtExpNs()),
		TokenNotYetValid:        p.GetTokenNotYetValid(),
		TokenExpired:            p.GetTokenExpired(),
		CredentialsCount:        int(p.GetCredentialsCount()),
		MultipleCredentials:     p.GetMultipleCredentials(),
		RequestHeaders:          p.GetRequestHeaders(),
		ResponseHeaders:         p.GetResponseHeaders(),
		RequestContentEncoding:  p.GetRequestContentEncoding(),
		ResponseContentEncoding: p.GetResponseContentEncoding(),
		RequestBody:             p.GetRequestBody(),
		ResponseBody:            p.GetResponseBody(),
		RequestBodyCaptured:     p.RequestBody != nil,
		ResponseBodyCaptured:    p.ResponseBody != nil,
		RequestBodyDecodedSize:  p.GetRequestBodyDecodedSize(),
		ResponseBodyDecodedSize: p.GetResponseBodyDecodedSize(),
		RequestBodyTruncated:    p.GetRequestBodyTruncated(),
		ResponseBodyTruncated:   p.GetResponseBodyTruncated(),
		RequestRetransmissions:  int64(p.GetRequestRetransmissions()),
		ResponseRetransmissions: int64(p.GetResponseRetransmissions()),
	}
}

// CallTime is the time a call is filed under (the http_calls.time column
// and its per-minute rollup): the first known of request start, response
// start, request end and response end, else now (a call without any
// timestamp is filed when it is stored).
func CallTime(p *orbweaverv1.HttpCall, now time.Time) time.Time {
	return time.Unix(0, CallTimeNs(p, now.UnixNano())).UTC()
}

// CallTimeNs is CallTime in Unix nanoseconds, for hot paths.
func CallTimeNs(p *orbweaverv1.HttpCall, nowNs int64) int64 {
	for _, ns := range [...]int64{p.GetRequestStartNs(), p.GetResponseStartNs(), p.GetRequestEndNs(), p.GetResponseEndNs()} {
		if ns != 0 {
			return ns
		}
	}
	return nowNs
}

func addrBytes(a netip.Addr) []byte {
	if !a.IsValid() {
		return nil
	}
	a = a.Unmap()
	return a.AsSlice()
}

// BytesAddr converts a 4- or 16-byte wire address; anything else gives the
// zero Addr.
func BytesAddr(b []byte) netip.Addr { return bytesAddr(b) }

func bytesAddr(b []byte) netip.Addr {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// AppendJSON appends one JSON object (no newline) describing c, with the
// http_calls column names as keys and times in RFC 3339 with nanoseconds.
// Absent values (status, duration, unseen times) are null.
func AppendJSON(b []byte, c *model.HTTPCall) []byte {
	t := c.RequestStart
	if t.IsZero() {
		t = c.ResponseStart
	}
	b = append(b, `{"time":`...)
	b = appendTime(b, t)
	b = append(b, `,"client_ip":`...)
	b = appendAddr(b, c.ClientAddr.Addr())
	b = append(b, `,"client_port":`...)
	b = strconv.AppendUint(b, uint64(c.ClientAddr.Port()), 10)
	b = append(b, `,"server_ip":`...)
	b = appendAddr(b, c.ServerAddr.Addr())
	b = append(b, `,"server_port":`...)
	b = strconv.AppendUint(b, uint64(c.ServerAddr.Port()), 10)
	b = appendStr(b, "method", c.Method)
	b = appendStr(b, "host", c.Host)
	b = appendStr(b, "path", c.Path)
	b = appendStr(b, "query", c.Query)
	b = appendStr(b, "http_version", c.HTTPVersion)
	b = append(b, `,"status":`...)
	if c.Status > 0 {
		b = strconv.AppendInt(b, int64(c.Status), 10)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"duration_us":`...)
	if !c.ResponseEnd.IsZero() && !c.RequestStart.IsZero() {
		b = strconv.AppendInt(b, c.Duration().Microseconds(), 10)
	} else {
		b = append(b, "null"...)
	}
	for _, f := range [...]struct {
		k string
		v time.Time
	}{{"request_start", c.RequestStart}, {"request_end", c.RequestEnd}, {"response_start", c.ResponseStart}, {"response_end", c.ResponseEnd}} {
		b = append(b, ',', '"')
		b = append(b, f.k...)
		b = append(b, '"', ':')
		b = appendTime(b, f.v)
	}
	b = appendInt(b, "request_header_size", c.RequestHeaderSize)
	b = appendInt(b, "request_body_size", c.RequestBodySize)
	b = appendInt(b, "response_header_size", c.ResponseHeaderSize)
	b = appendInt(b, "response_body_size", c.ResponseBodySize)
	b = appendStr(b, "request_content_type", c.RequestContentType)
	b = appendStr(b, "response_content_type", c.ResponseContentType)
	b = appendStr(b, "user_agent", c.UserAgent)
	b = appendStr(b, "x_forwarded_for", c.XForwardedFor)
	b = appendStr(b, "x_request_id", c.XRequestID)
	b = appendStr(b, "traceparent", c.Traceparent)
	b = appendStr(b, "parse_status", string(c.ParseStatus))
	b = appendStr(b, "identification", c.Identification)
	b = append(b, `,"origin":`...)
	b = appendAddr(b, c.Origin)
	b = appendStr(b, "template", c.Template)
	b = appendStr(b, "jwt_iss", c.JWTIssuer)
	b = appendStr(b, "jwt_sub", c.JWTSubject)
	b = appendStr(b, "jwt_aud", c.JWTAudience)
	for _, f := range [...]struct {
		k string
		v time.Time
	}{{"jwt_iat", c.JWTIssuedAt}, {"jwt_nbf", c.JWTNotBefore}, {"jwt_exp", c.JWTExpires}} {
		b = append(b, ',', '"')
		b = append(b, f.k...)
		b = append(b, '"', ':')
		b = appendTime(b, f.v)
	}
	b = appendBool(b, "token_not_yet_valid", c.TokenNotYetValid)
	b = appendBool(b, "token_expired", c.TokenExpired)
	b = appendInt(b, "credentials_count", int64(c.CredentialsCount))
	b = appendBool(b, "multiple_credentials", c.MultipleCredentials)
	b = appendRawJSON(b, "request_headers", c.RequestHeaders)
	b = appendRawJSON(b, "response_headers", c.ResponseHeaders)
	b = appendStr(b, "request_content_encoding", c.RequestContentEncoding)
	b = appendStr(b, "response_content_encoding", c.ResponseContentEncoding)
	b = appendBody(b, "request", c.RequestBodyCaptured, c.RequestBody, c.RequestBodyDecodedSize, c.RequestBodyTruncated)
	b = appendBody(b, "response", c.ResponseBodyCaptured, c.ResponseBody, c.ResponseBodyDecodedSize, c.ResponseBodyTruncated)
	b = appendInt(b, "request_retransmissions", c.RequestRetransmissions)
	b = appendInt(b, "response_retransmissions", c.ResponseRetransmissions)
	return append(b, '}')
}

func appendBool(b []byte, k string, v bool) []byte {
	b = append(b, ',', '"')
	b = append(b, k...)
	b = append(b, '"', ':')
	return strconv.AppendBool(b, v)
}

// appendRawJSON appends a JSON object held as text (a header set), or null
// when empty or not valid JSON.
func appendRawJSON(b []byte, k, v string) []byte {
	b = append(b, ',', '"')
	b = append(b, k...)
	b = append(b, '"', ':')
	if v == "" || !json.Valid([]byte(v)) {
		return append(b, "null"...)
	}
	return append(b, v...)
}

// appendBody appends <dir>_body, <dir>_body_decoded_size and
// <dir>_body_truncated: null unless the body was captured.
func appendBody(b []byte, dir string, captured bool, body string, size int64, truncated bool) []byte {
	b = append(b, ',', '"')
	b = append(b, dir...)
	b = append(b, `_body":`...)
	if captured {
		b = AppendJSONString(b, body)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, ',', '"')
	b = append(b, dir...)
	b = append(b, `_body_decoded_size":`...)
	if captured {
		b = strconv.AppendInt(b, size, 10)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, ',', '"')
	b = append(b, dir...)
	b = append(b, `_body_truncated":`...)
	return strconv.AppendBool(b, truncated)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000000Z07:00")
	return append(b, '"')
}

func appendAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = a.AppendTo(b)
	return append(b, '"')
}

func appendInt(b []byte, k string, v int64) []byte {
	b = append(b, ',', '"')
	b = append(b, k...)
	b = append(b, '"', ':')
	return strconv.AppendInt(b, v, 10)
}

func appendStr(b []byte, k, v string) []byte {
	b = append(b, ',', '"')
	b = append(b, k...)
	b = append(b, '"', ':')
	return AppendJSONString(b, v)
}

const hex = "0123456789abcdef"

// AppendJSONString appends s as a JSON string literal. Invalid UTF-8 bytes
// become U+FFFD so the output is always valid JSON.
func AppendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c >= 0x20:
				b = append(b, c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
