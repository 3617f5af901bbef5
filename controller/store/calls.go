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
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/callconv"
)

// BatchResult tells what InsertCallBatch or InsertCallBatches stored for
// one batch.
type BatchResult struct {
	// Duplicate: the batch had been stored before; nothing was stored now.
	Duplicate bool
	// Rows is the number of calls stored by this call (0 for a duplicate).
	Rows int
	// Err (InsertCallBatches only) is why this batch was refused on its
	// own account (ids out of range, calls that cannot be encoded); nothing
	// of it was stored, and a resend after a fix is accepted.
	Err error
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
	res, err := s.InsertCallBatches(ctx, []*orbweaverv1.CallBatch{b})
	if err != nil {
		return BatchResult{}, err
	}
	if res[0].Err != nil {
		return BatchResult{}, res[0].Err
	}
	return res[0], nil
}

// batchKey identifies a batch in ingested_batches.
type batchKey struct {
	agent, boot [16]byte
	seq         int64
}

// InsertCallBatches stores several batches, each exactly once as
// InsertCallBatch does, in one transaction and one COPY: the controller
// coalesces the batches waiting to be stored, which costs Postgres less per
// call than a transaction per batch. results[i] is batches[i]'s. A batch
// refused on its own account has results[i].Err set and the others are
// stored. An error means the transaction failed and nothing was stored;
// one batch can fail the transaction for all (a value the server rejects),
// so callers retry the batches one by one before blaming any. A batch given
// twice is stored once and reported once as a duplicate. Safe for
// concurrent use; concurrent inserts of the same batch store it once.
func (s *Store) InsertCallBatches(ctx context.Context, batches []*orbweaverv1.CallBatch) ([]BatchResult, error) {
	results := make([]BatchResult, len(batches))
	enc := s.encoders.Get().(*copyEncoder)
	defer s.encoders.Put(enc)
	enc.start(time.Now())
	var (
		keys     []batchKey
		pending  []int // batches[i] recorded in keys, same order
		segments [][2]int
		first    = make(map[batchKey]int, len(batches))
		repeats  map[int]int // batch index → index of the same batch earlier in batches
	)
	for i, b := range batches {
		k, err := keyOf(b)
		if err != nil {
			results[i].Err = err
			continue
		}
		if j, ok := first[k]; ok {
			if repeats == nil {
				repeats = map[int]int{}
			}
			repeats[i] = j
			continue
		}
		first[k] = i
		from := len(enc.buf)
		if err := enc.add(k.agent, b.GetHttpCalls()); err != nil {
			results[i].Err = fmt.Errorf("store: insert batch %s/%s/%d: encode calls: %w", b.GetAgentId(), b.GetBootId(), b.GetSequence(), err)
			continue
		}
		keys = append(keys, k)
		pending = append(pending, i)
		segments = append(segments, [2]int{from, len(enc.buf)})
	}
	if len(keys) > 0 {
		if err := s.storeBatches(ctx, enc, batches, keys, pending, segments, results); err != nil {
			if len(batches) == 1 {
				b := batches[0]
				return nil, fmt.Errorf("store: insert batch %s/%s/%d: %w", b.GetAgentId(), b.GetBootId(), b.GetSequence(), err)
			}
			return nil, fmt.Errorf("store: insert %d batches: %w", len(batches), err)
		}
	}
	for i, j := range repeats {
		if results[j].Err != nil {
			results[i].Err = results[j].Err
		} else {
			results[i].Duplicate = true
		}
	}
	return results, nil
}

// keyOf validates a batch's identity.
func keyOf(b *orbweaverv1.CallBatch) (batchKey, error) {
	agentID, err := uuid.Parse(b.GetAgentId())
	if err != nil {
		return batchKey{}, fmt.Errorf("store: insert batch: agent id %q: %w", b.GetAgentId(), err)
	}
	bootID, err := uuid.Parse(b.GetBootId())
	if err != nil {
		return batchKey{}, fmt.Errorf("store: insert batch: boot id %q: %w", b.GetBootId(), err)
	}
	if b.GetSequence() > math.MaxInt64 {
		return batchKey{}, fmt.Errorf("store: insert batch: sequence %d out of range", b.GetSequence())
	}
	if len(b.GetHttpCalls()) > math.MaxInt32 {
		return batchKey{}, fmt.Errorf("store: insert batch: %d calls", len(b.GetHttpCalls()))
	}
	return batchKey{agent: agentID, boot: bootID, seq: int64(b.GetSequence())}, nil
}

// recordBatchesSQL records batches in ingested_batches, in key order (so
// that concurrent transactions recording the same batches wait for each
// other instead of deadlocking), and returns those not recorded before.
const recordBatchesSQL = `INSERT INTO ingested_batches (agent_id, boot_id, sequence, calls)
	SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::int[]) ORDER BY 1, 2, 3
	ON CONFLICT DO NOTHING
	RETURNING agent_id, boot_id, sequence`

// storeBatches runs the transaction of InsertCallBatches: batches[pending[i]]
// has key keys[i] and its rows in enc.buf[segments[i][0]:segments[i][1]].
func (s *Store) storeBatches(ctx context.Context, enc *copyEncoder, batches []*orbweaverv1.CallBatch,
	keys []batchKey, pending []int, segments [][2]int, results []BatchResult) error {
	agentIDs := make([]pgtype.UUID, len(keys))
	bootIDs := make([]pgtype.UUID, len(keys))
	seqs := make([]int64, len(keys))
	counts := make([]int32, len(keys))
	for i, k := range keys {
		agentIDs[i] = pgtype.UUID{Bytes: k.agent, Valid: true}
		bootIDs[i] = pgtype.UUID{Bytes: k.boot, Valid: true}
		seqs[i] = k.seq
		counts[i] = int32(len(batches[pending[i]].GetHttpCalls()))
	}
	var stored []int // indexes into keys
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		stored = stored[:0]
		rows, err := tx.Query(ctx, recordBatchesSQL, agentIDs, bootIDs, seqs, counts)
		if err != nil {
			return fmt.Errorf("record batches: %w", err)
		}
		isNew := make(map[batchKey]bool, len(keys))
		var k batchKey
		_, err = pgx.ForEachRow(rows, []any{&k.agent, &k.boot, &k.seq}, func() error {
			isNew[k] = true
			return nil
		})
		if err != nil {
			return fmt.Errorf("record batches: %w", err)
		}
		var calls int64
		for i, k := range keys {
			if isNew[k] {
				stored = append(stored, i)
				calls += int64(counts[i])
			}
		}
		if calls == 0 {
			return nil
		}
		var data []byte
		if len(stored) == len(keys) {
			data = enc.finish()
		} else {
			parts := make([][2]int, len(stored))
			for j, i := range stored {
				parts[j] = segments[i]
			}
			data = enc.subset(parts)
		}
		tag, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(data), copyCallsSQL)
		if err != nil {
			return fmt.Errorf("copy calls: %w", err)
		}
		if tag.RowsAffected() != calls {
			return fmt.Errorf("copy calls: %d rows copied, want %d", tag.RowsAffected(), calls)
		}
		if err := writeRollups(ctx, tx, enc.now, batches, pending, stored); err != nil { // per-minute rollups (rollup.go, migration 0011)
			return fmt.Errorf("rollups: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := range keys {
		results[pending[i]].Duplicate = true
	}
	for _, i := range stored {
		results[pending[i]] = BatchResult{Rows: int(counts[i])}
	}
	return nil
}

// copyHeader starts a binary COPY stream: signature, flags, no extension.
var copyHeader = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")

// copyEncoder writes calls in PostgreSQL's binary COPY format, straight
// from the protobuf messages: no per-value interface boxing, no
// reflection, buffers reused across transactions. Use start, add for each
// batch, then finish or subset.
type copyEncoder struct {
	buf     []byte
	sub     []byte // subset's stream
	agentID uuid.UUID
	now     time.Time
}

// start begins a stream; now is the time of calls that have none.
func (e *copyEncoder) start(now time.Time) {
	e.buf = append(e.buf[:0], copyHeader...)
	e.now = now
}

// add appends the rows of one agent's calls. On error nothing is appended.
func (e *copyEncoder) add(agentID uuid.UUID, calls []*orbweaverv1.HttpCall) error {
	from := len(e.buf)
	e.agentID = agentID
	for i, h := range calls {
		if err := e.row(h); err != nil {
			e.buf = e.buf[:from]
			return fmt.Errorf("call %d: %w", i, err)
		}
	}
	return nil
}

// finish returns the stream of every row added (valid until start).
func (e *copyEncoder) finish() []byte {
	e.buf = binary.BigEndian.AppendUint16(e.buf, 0xffff) // trailer: -1
	return e.buf
}

// subset returns a stream of the rows in the given ranges of e.buf (valid
// until the next subset).
func (e *copyEncoder) subset(parts [][2]int) []byte {
	e.sub = append(e.sub[:0], copyHeader...)
	for _, p := range parts {
		e.sub = append(e.sub, e.buf[p[0]:p[1]]...)
	}
	e.sub = binary.BigEndian.AppendUint16(e.sub, 0xffff)
	return e.sub
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
	e.timestamp(callconv.CallTimeNs(h, e.now.UnixNano()))
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
// JSON object PostgreSQL accepts: one bad value from an agent must not fail
// its batch (and the others stored with it). jsonb rejects \u0000, which
// becomes U+FFFD, and a \u escape of half a surrogate pair, which makes the
// value NULL.
func (e *copyEncoder) jsonb(s string) {
	if len(s) < 2 || s[0] != '{' || !json.Valid(unsafe.Slice(unsafe.StringData(s), len(s))) || loneSurrogate(s) {
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

// loneSurrogate tells whether valid JSON s has a \u escape of a UTF-16
// surrogate that is not followed or preceded by its other half (encoding/json
// accepts it, PostgreSQL's JSON parser does not).
func loneSurrogate(s string) bool {
	if !strings.Contains(s, `\u`) {
		return false
	}
	high := false // the previous escape was a high surrogate
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			if high {
				return true
			}
			continue
		}
		i++ // s is valid JSON: an escape has its character
		if s[i] != 'u' {
			if high {
				return true
			}
			continue
		}
		v, err := strconv.ParseUint(s[i+1:i+5], 16, 16)
		if err != nil {
			return true
		}
		i += 4
		switch {
		case v >= 0xd800 && v < 0xdc00:
			if high {
				return true
			}
			high = true
		case v >= 0xdc00 && v < 0xe000:
			if !high {
				return true
			}
			high = false
		default:
			if high {
				return true
			}
		}
	}
	return high
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
