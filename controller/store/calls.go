package store

import (
	"context"
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
		src := newCallSource(agentID, calls, time.Now())
		n, err := tx.CopyFrom(ctx, pgx.Identifier{"http_calls"}, httpCallColumns, src)
		if src.err != nil {
			// The server only saw "COPY from stdin failed"; report our error.
			err = src.err
		}
		if err != nil {
			return fmt.Errorf("copy calls: %w", err)
		}
		res.Rows = int(n)
		return nil
	})
	if err != nil {
		return BatchResult{}, fmt.Errorf("store: insert batch %s/%s/%d: %w", agentID, bootID, b.GetSequence(), err)
	}
	return res, nil
}

// callSource feeds the calls of a batch to COPY, one reused row at a time.
type callSource struct {
	agentID uuid.UUID
	calls   []*orbweaverv1.HttpCall
	now     time.Time
	i       int
	row     []any
	err     error
}

func newCallSource(agentID uuid.UUID, calls []*orbweaverv1.HttpCall, now time.Time) *callSource {
	return &callSource{agentID: agentID, calls: calls, now: now, i: -1, row: make([]any, len(httpCallColumns))}
}

// Next implements pgx.CopyFromSource.
func (c *callSource) Next() bool {
	c.i++
	return c.i < len(c.calls) && c.err == nil
}

// Err implements pgx.CopyFromSource.
func (c *callSource) Err() error { return c.err }

// Values implements pgx.CopyFromSource. The returned slice is reused: COPY
// encodes it before asking for the next row.
func (c *callSource) Values() ([]any, error) {
	h := c.calls[c.i]
	if h == nil {
		c.err = fmt.Errorf("call %d is nil", c.i)
		return nil, c.err
	}
	clientIP, err := ipValue(h.GetClientIp())
	if err != nil {
		c.err = fmt.Errorf("call %d: client ip: %w", c.i, err)
		return nil, c.err
	}
	serverIP, err := ipValue(h.GetServerIp())
	if err != nil {
		c.err = fmt.Errorf("call %d: server ip: %w", c.i, err)
		return nil, c.err
	}
	status := h.GetStatus()
	if status > math.MaxInt16 {
		c.err = fmt.Errorf("call %d: status %d out of range", c.i, status)
		return nil, c.err
	}
	reqStart, reqEnd := h.GetRequestStartNs(), h.GetRequestEndNs()
	respStart, respEnd := h.GetResponseStartNs(), h.GetResponseEndNs()

	r := c.row
	r[0] = c.callTime(reqStart, respStart, reqEnd, respEnd)
	r[1] = c.agentID
	r[2] = clientIP
	r[3] = portValue(h.GetClientPort(), clientIP)
	r[4] = serverIP
	r[5] = portValue(h.GetServerPort(), serverIP)
	r[6] = text(h.GetMethod())
	r[7] = text(h.GetHost())
	r[8] = text(h.GetPath())
	r[9] = text(h.GetQuery())
	r[10] = text(h.GetHttpVersion())
	if status == 0 {
		r[11] = nil
	} else {
		r[11] = int16(status)
	}
	if reqStart != 0 && respEnd != 0 {
		r[12] = (respEnd - reqStart) / 1000
	} else {
		r[12] = nil
	}
	r[13] = timeValue(reqStart)
	r[14] = timeValue(reqEnd)
	r[15] = timeValue(respStart)
	r[16] = timeValue(respEnd)
	r[17] = clampInt32(h.GetRequestHeaderSize())
	r[18] = h.GetRequestBodySize()
	r[19] = clampInt32(h.GetResponseHeaderSize())
	r[20] = h.GetResponseBodySize()
	r[21] = text(h.GetRequestContentType())
	r[22] = text(h.GetResponseContentType())
	r[23] = text(h.GetUserAgent())
	r[24] = text(h.GetXForwardedFor())
	r[25] = text(h.GetXRequestId())
	r[26] = text(h.GetTraceparent())
	r[27] = text(h.GetParseStatus())

	origin, err := ipValue(h.GetOriginIp())
	if err != nil {
		c.err = fmt.Errorf("call %d: origin ip: %w", c.i, err)
		return nil, c.err
	}
	r[28] = nullText(h.GetIdentification())
	r[29] = origin
	if h.GetMethod() != "" {
		r[30] = text(h.GetTemplate())
		r[37] = h.GetTokenNotYetValid()
		r[38] = h.GetTokenExpired()
		r[39] = int16(min(h.GetCredentialsCount(), math.MaxInt16))
		r[40] = h.GetMultipleCredentials()
	} else {
		r[30], r[37], r[38], r[39], r[40] = nil, nil, nil, nil, nil
	}
	r[31] = nullText(h.GetJwtIss())
	r[32] = nullText(h.GetJwtSub())
	r[33] = nullText(h.GetJwtAud())
	r[34] = timeValue(h.GetJwtIatNs())
	r[35] = timeValue(h.GetJwtNbfNs())
	r[36] = timeValue(h.GetJwtExpNs())
	r[41] = jsonValue(h.GetRequestHeaders())
	r[42] = jsonValue(h.GetResponseHeaders())
	r[43] = text(h.GetRequestContentEncoding())
	r[44] = text(h.GetResponseContentEncoding())
	if h.RequestBody != nil {
		r[45] = text(*h.RequestBody)
		r[47] = int32(max(min(h.GetRequestBodyDecodedSize(), math.MaxInt32), 0))
		r[49] = h.GetRequestBodyTruncated()
	} else {
		r[45], r[47], r[49] = nil, nil, nil
	}
	if h.ResponseBody != nil {
		r[46] = text(*h.ResponseBody)
		r[48] = int32(max(min(h.GetResponseBodyDecodedSize(), math.MaxInt32), 0))
		r[50] = h.GetResponseBodyTruncated()
	} else {
		r[46], r[48], r[50] = nil, nil, nil
	}
	r[51] = int32(min(h.GetRequestRetransmissions(), math.MaxInt32))
	r[52] = int32(min(h.GetResponseRetransmissions(), math.MaxInt32))
	return r, nil
}

// callTime is the first time seen among the arguments, else c.now.
func (c *callSource) callTime(ns ...int64) time.Time {
	for _, n := range ns {
		if n != 0 {
			return time.Unix(0, n).UTC()
		}
	}
	return c.now
}

// timeValue is nil for 0 (not seen), else the UTC time.
func timeValue(ns int64) any {
	if ns == 0 {
		return nil
	}
	return time.Unix(0, ns).UTC()
}

var errIPLength = errors.New("want 4 or 16 bytes")

// ipValue is nil for an empty address, else a netip.Addr.
func ipValue(b []byte) (any, error) {
	if len(b) == 0 {
		return nil, nil
	}
	addr, ok := netip.AddrFromSlice(b)
	if !ok {
		return nil, fmt.Errorf("%d bytes: %w", len(b), errIPLength)
	}
	return addr.Unmap(), nil
}

// portValue is nil when neither the port nor its IP is set.
func portValue(port uint32, ip any) any {
	if port == 0 && ip == nil {
		return nil
	}
	return int32(min(port, math.MaxInt32))
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

// nullText is text(s), or nil (NULL) for "".
func nullText(s string) any {
	if s == "" {
		return nil
	}
	return text(s)
}

// jsonValue is s as jsonb text, or nil (NULL) when s is empty or not a JSON
// object: one bad value from an agent must not fail its batch. jsonb
// rejects \u0000, which becomes U+FFFD.
func jsonValue(s string) any {
	if len(s) < 2 || s[0] != '{' || !json.Valid(unsafe.Slice(unsafe.StringData(s), len(s))) {
		return nil
	}
	if strings.Contains(s, `\u0000`) {
		s = strings.ReplaceAll(s, `\u0000`, `\ufffd`)
	}
	return s
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
