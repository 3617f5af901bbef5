package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

// BatchResult tells what InsertCallBatch stored.
type BatchResult struct {
	// Duplicate: the batch had been stored before; nothing was stored now.
	Duplicate bool
	// Rows is the number of calls stored by this call (0 for a duplicate).
	Rows int
}

// httpCallColumns are the http_calls columns InsertCallBatch writes, in
// the order callSource.Values returns them.
var httpCallColumns = []string{
	"time", "agent_id",
	"client_ip", "client_port", "server_ip", "server_port",
	"method", "host", "path", "query", "http_version",
	"status", "duration_us",
	"request_start", "request_end", "response_start", "response_end",
	"request_header_size", "request_body_size", "response_header_size", "response_body_size",
	"request_content_type", "response_content_type", "user_agent",
	"x_forwarded_for", "x_request_id", "traceparent",
	"parse_status",
	// 0007_http_call_fields
	"identification", "origin", "template",
	"jwt_iss", "jwt_sub", "jwt_aud", "jwt_iat", "jwt_nbf", "jwt_exp",
	"token_not_yet_valid", "token_expired", "credentials_count", "multiple_credentials",
	"request_headers", "response_headers",
	"request_content_encoding", "response_content_encoding",
	"request_body", "response_body", "request_body_decoded_size", "response_body_decoded_size",
	"request_body_truncated", "response_body_truncated",
	"request_retransmissions", "response_retransmissions",
}

// copyCallsSQL copies httpCallColumns in binary format.
var copyCallsSQL = "COPY http_calls (" + strings.Join(httpCallColumns, ", ") + ") FROM STDIN (FORMAT binary)"

// InsertCallBatch stores a batch exactly once. In one transaction it
// records (agent_id, boot_id, sequence) in ingested_batches and, when that
// row is new, copies the calls into http_calls; a batch stored before is
// reported as Duplicate. Concurrent inserts of the same batch store it once.
//
// Column mapping: times (Unix ns, 0 = not seen) become timestamptz with
// microsecond precision, NULL when 0; time is request_start, else
// response_start, else request_end, else response_end, else the time of
// insertion. IPs (4 or 16 bytes; IPv4-mapped IPv6 unmapped) become inet,
// NULL when empty, and a port is NULL when both its IP and port are unset.
// status is NULL when 0; duration_us is response_end − request_start,
// NULL unless both were seen. Strings are stored as given (empty stays empty, not NULL),
// NUL bytes and invalid UTF-8 replaced by U+FFFD.
//
// Derived fields (migration 0007): origin is inet, NULL when empty;
// jwt_* times NULL when 0; the request-side fields (identification,
// template, JWT claims and flags, credentials) are NULL when the call has
// no request (no method), as they were not derived; header sets are jsonb,
// NULL when empty or not a valid JSON object; bodies and their decoded
// sizes are NULL unless the body was captured (request_body /
// response_body present), and so is *_body_truncated; counts are clamped
// to their column types.
func (s *Store) InsertCallBatch(ctx context.Context, b *orbweaverv1.CallBatch) (BatchResult, error) {
	agentID, err := uuid.Parse(b.GetAgentId())
	if err != nil {
		return BatchResult{}, fmt.Errorf("store: insert batch: agent id %q: %w", b.GetAgentId(), err)
	}
	bootID, err := uuid.Parse(b.GetBootId())
	if err != nil {
		return BatchResult{}, fmt.Errorf("store: insert batch: boot id %q: %w", b.GetBootId(), err)
	}
	if b.GetSequence() > math.MaxInt64 {
		return BatchResult{}, fmt.Errorf("store: insert batch: sequence %d out of range", b.GetSequence())
	}
	calls := b.GetHttpCalls()
	if len(calls) > math.MaxInt32 {
		return BatchResult{}, fmt.Errorf("store: insert batch: %d calls", len(calls))
	}
	var res BatchResult
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO ingested_batches (agent_id, boot_id, sequence, calls)
			VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
			agentID, bootID, int64(b.GetSequence()), int32(len(calls)))
		if err != nil {
			return fmt.Errorf("record batch: %w", err)
		}
		if tag.RowsAffected() == 0 {
			res.Duplicate = true
			return nil
		}
		if len(calls) == 0 {
			return nil
		}
		enc := s.encoders.Get().(*copyEncoder)
		defer s.encoders.Put(enc)
		enc.agentID, enc.now = agentID, time.Now()
		data, err := enc.encode(calls)
		if err != nil {
			return fmt.Errorf("encode calls: %w", err)
		}
		tagCopy, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(data), copyCallsSQL)
		if err != nil {
			return fmt.Errorf("copy calls: %w", err)
		}
		res.Rows = int(tagCopy.RowsAffected())
		return nil
	})
	if err != nil {
		return BatchResult{}, fmt.Errorf("store: insert batch %s/%s/%d: %w", agentID, bootID, b.GetSequence(), err)
	}
	return res, nil
}

// copyHeader starts a binary COPY stream: signature, flags, no extension.
var copyHeader = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")

// copyEncoder writes the calls of a batch in PostgreSQL's binary COPY
// format, straight from the protobuf messages: no per-value interface
// boxing, no reflection, one buffer reused across batches.
type copyEncoder struct {
	buf     []byte
	agentID uuid.UUID
	now     time.Time
}

// encode returns the COPY stream for calls (valid until the next call).
func (e *copyEncoder) encode(calls []*orbweaverv1.HttpCall) ([]byte, error) {
	e.buf = append(e.buf[:0], copyHeader...)
	for i, h := range calls {
		if err := e.row(h); err != nil {
			return nil, fmt.Errorf("call %d: %w", i, err)
		}
	}
	e.buf = binary.BigEndian.AppendUint16(e.buf, 0xffff) // trailer: -1
	return e.buf, nil
}

func (e *copyEncoder) row(h *orbweaverv1.HttpCall) error {
	if h == nil {
		return errors.New("nil call")
	}
	clientIP, err := ipValue(h.GetClientIp())
	if err != nil {
		return fmt.Errorf("client ip: %w", err)
	}
	serverIP, err := ipValue(h.GetServerIp())
	if err != nil {
		return fmt.Errorf("server ip: %w", err)
	}
	origin, err := ipValue(h.GetOriginIp())
	if err != nil {
		return fmt.Errorf("origin ip: %w", err)
	}
	status := h.GetStatus()
	if status > math.MaxInt16 {
		return fmt.Errorf("status %d out of range", status)
	}
	reqStart, reqEnd := h.GetRequestStartNs(), h.GetRequestEndNs()
	respStart, respEnd := h.GetResponseStartNs(), h.GetResponseEndNs()

	e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(len(httpCallColumns)))
	e.timestamp(firstNonZero(reqStart, respStart, reqEnd, respEnd, e.now.UnixNano()))
	e.field(e.agentID[:])
	e.inet(clientIP)
	e.port(h.GetClientPort(), clientIP)
	e.inet(serverIP)
	e.port(h.GetServerPort(), serverIP)
	e.text(h.GetMethod())
	e.text(h.GetHost())
	e.text(h.GetPath())
	e.text(h.GetQuery())
	e.text(h.GetHttpVersion())
	if status == 0 {
		e.null()
	} else {
		e.int16(int16(status))
	}
	if reqStart != 0 && respEnd != 0 {
		e.int64((respEnd - reqStart) / 1000)
	} else {
		e.null()
	}
	e.optTimestamp(reqStart)
	e.optTimestamp(reqEnd)
	e.optTimestamp(respStart)
	e.optTimestamp(respEnd)
	e.int32(clampInt32(h.GetRequestHeaderSize()))
	e.int64(h.GetRequestBodySize())
	e.int32(clampInt32(h.GetResponseHeaderSize()))
	e.int64(h.GetResponseBodySize())
	e.text(h.GetRequestContentType())
	e.text(h.GetResponseContentType())
	e.text(h.GetUserAgent())
	e.text(h.GetXForwardedFor())
	e.text(h.GetXRequestId())
	e.text(h.GetTraceparent())
	e.text(h.GetParseStatus())
	// 0007_http_call_fields
	e.nullText(h.GetIdentification())
	e.inet(origin)
	hasRequest := h.GetMethod() != ""
	if hasRequest {
		e.text(h.GetTemplate())
	} else {
		e.null()
	}
	e.nullText(h.GetJwtIss())
	e.nullText(h.GetJwtSub())
	e.nullText(h.GetJwtAud())
	e.optTimestamp(h.GetJwtIatNs())
	e.optTimestamp(h.GetJwtNbfNs())
	e.optTimestamp(h.GetJwtExpNs())
	if hasRequest {
		e.bool(h.GetTokenNotYetValid())
		e.bool(h.GetTokenExpired())
		e.int16(int16(min(h.GetCredentialsCount(), math.MaxInt16)))
		e.bool(h.GetMultipleCredentials())
	} else {
		e.null()
		e.null()
		e.null()
		e.null()
	}
	e.jsonb(h.GetRequestHeaders())
	e.jsonb(h.GetResponseHeaders())
	e.text(h.GetRequestContentEncoding())
	e.text(h.GetResponseContentEncoding())
	if h.RequestBody != nil {
		e.text(*h.RequestBody)
	} else {
		e.null()
	}
	if h.ResponseBody != nil {
		e.text(*h.ResponseBody)
	} else {
		e.null()
	}
	e.optSize(h.RequestBody != nil, h.GetRequestBodyDecodedSize())
	e.optSize(h.ResponseBody != nil, h.GetResponseBodyDecodedSize())
	if h.RequestBody != nil {
		e.bool(h.GetRequestBodyTruncated())
	} else {
		e.null()
	}
	if h.ResponseBody != nil {
		e.bool(h.GetResponseBodyTruncated())
	} else {
		e.null()
	}
	e.int32(int32(min(h.GetRequestRetransmissions(), math.MaxInt32)))
	e.int32(int32(min(h.GetResponseRetransmissions(), math.MaxInt32)))
	return nil
}

func firstNonZero(ns ...int64) int64 {
	for _, n := range ns {
		if n != 0 {
			return n
		}
	}
	return 0
}

func (e *copyEncoder) null() { e.buf = binary.BigEndian.AppendUint32(e.buf, 0xffffffff) }

func (e *copyEncoder) field(b []byte) {
	e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(len(b)))
	e.buf = append(e.buf, b...)
}

func (e *copyEncoder) int16(v int16) {
	e.buf = binary.BigEndian.AppendUint32(e.buf, 2)
	e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(v))
}

func (e *copyEncoder) int32(v int32) {
	e.buf = binary.BigEndian.AppendUint32(e.buf, 4)
	e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(v))
}

func (e *copyEncoder) int64(v int64) {
	e.buf = binary.BigEndian.AppendUint32(e.buf, 8)
	e.buf = binary.BigEndian.AppendUint64(e.buf, uint64(v))
}

func (e *copyEncoder) bool(v bool) {
	e.buf = binary.BigEndian.AppendUint32(e.buf, 1)
	if v {
		e.buf = append(e.buf, 1)
	} else {
		e.buf = append(e.buf, 0)
	}
}

// pgEpochMicros is 2000-01-01 00:00:00 UTC in Unix microseconds: binary
// timestamptz counts microseconds from there.
const pgEpochMicros = 946684800 * 1000000

// timestamp writes Unix nanoseconds truncated to microseconds.
func (e *copyEncoder) timestamp(ns int64) {
	us := ns / 1000
	if ns < 0 && ns%1000 != 0 {
		us-- // floor, as time.Time does
	}
	e.int64(us - pgEpochMicros)
}

// optTimestamp is NULL for 0 (not seen).
func (e *copyEncoder) optTimestamp(ns int64) {
	if ns == 0 {
		e.null()
		return
	}
	e.timestamp(ns)
}

// inet writes a host address (/32 or /128), NULL when invalid.
func (e *copyEncoder) inet(a netip.Addr) {
	switch {
	case !a.IsValid():
		e.null()
	case a.Is4():
		e.buf = binary.BigEndian.AppendUint32(e.buf, 8)
		v := a.As4()
		e.buf = append(e.buf, 2, 32, 0, 4) // PGSQL_AF_INET, bits, is_cidr, length
		e.buf = append(e.buf, v[:]...)
	default:
		e.buf = binary.BigEndian.AppendUint32(e.buf, 20)
		v := a.As16()
		e.buf = append(e.buf, 3, 128, 0, 16) // PGSQL_AF_INET6
		e.buf = append(e.buf, v[:]...)
	}
}

// port is NULL when neither the port nor its IP is set.
func (e *copyEncoder) port(port uint32, ip netip.Addr) {
	if port == 0 && !ip.IsValid() {
		e.null()
		return
	}
	e.int32(int32(min(port, math.MaxInt32)))
}

func (e *copyEncoder) text(s string) {
	s = text(s)
	e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(len(s)))
	e.buf = append(e.buf, s...)
}

// nullText is NULL for "".
func (e *copyEncoder) nullText(s string) {
	if s == "" {
		e.null()
		return
	}
	e.text(s)
}

// optSize is a decoded body size, NULL when the body was not captured.
func (e *copyEncoder) optSize(captured bool, v int64) {
	if !captured {
		e.null()
		return
	}
	e.int32(int32(max(min(v, math.MaxInt32), 0)))
}

// jsonb writes s as jsonb (format version 1), NULL when empty or not a
// JSON object: one bad value from an agent must not fail its batch. jsonb
// rejects \u0000, which becomes U+FFFD.
func (e *copyEncoder) jsonb(s string) {
	if len(s) < 2 || s[0] != '{' || !json.Valid(unsafe.Slice(unsafe.StringData(s), len(s))) {
		e.null()
		return
	}
	if strings.Contains(s, `\u0000`) {
		s = strings.ReplaceAll(s, `\u0000`, `\ufffd`)
	}
	e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(len(s)+1))
	e.buf = append(e.buf, 1)
	e.buf = append(e.buf, s...)
}

var errIPLength = errors.New("want 4 or 16 bytes")

// ipValue is the zero Addr for an empty address, else the address
// (IPv4-mapped IPv6 unmapped).
func ipValue(b []byte) (netip.Addr, error) {
	if len(b) == 0 {
		return netip.Addr{}, nil
	}
	addr, ok := netip.AddrFromSlice(b)
	if !ok {
		return netip.Addr{}, fmt.Errorf("%d bytes: %w", len(b), errIPLength)
	}
	return addr.Unmap(), nil
}

func clampInt32(v int64) int32 {
	return int32(max(min(v, math.MaxInt32), math.MinInt32))
}

// text makes s storable in a text column: PostgreSQL rejects NUL bytes and
// invalid UTF-8 (possible when a HttpCall did not come through protobuf
// decoding, which rejects invalid UTF-8).
func text(s string) string {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// CountCalls returns the number of calls stored for agentID, or for all
// agents when agentID is "". Meant for tests and tools: it scans.
func (s *Store) CountCalls(ctx context.Context, agentID string) (int64, error) {
	var n int64
	var err error
	if agentID == "" {
		err = s.pool.QueryRow(ctx, "SELECT count(*) FROM http_calls").Scan(&n)
	} else {
		id, perr := uuid.Parse(agentID)
		if perr != nil {
			return 0, fmt.Errorf("store: count calls: agent id %q: %w", agentID, perr)
		}
		err = s.pool.QueryRow(ctx, "SELECT count(*) FROM http_calls WHERE agent_id = $1", id).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("store: count calls: %w", err)
	}
	return n, nil
}
