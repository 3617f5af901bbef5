package store_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orbweaver/orbweaver/controller/store"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
)

const (
	testAgent = "6f9c8d52-1b2a-4c3d-8e4f-5a6b7c8d9e0f"
	testBoot  = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
)

// call is a minimal complete call starting at t.
func call(t time.Time) *orbweaverv1.HttpCall {
	ns := t.UnixNano()
	return &orbweaverv1.HttpCall{
		ClientIp: []byte{10, 0, 0, 1}, ClientPort: 40000, ServerIp: []byte{10, 0, 0, 2}, ServerPort: 80,
		RequestStartNs: ns, RequestEndNs: ns + 1000, ResponseStartNs: ns + 2000, ResponseEndNs: ns + 3000,
		Method: "GET", Host: "svc", Path: "/", HttpVersion: "1.1", Status: 200, ParseStatus: "ok",
	}
}

func batch(seq uint64, calls ...*orbweaverv1.HttpCall) *orbweaverv1.CallBatch {
	return &orbweaverv1.CallBatch{AgentId: testAgent, BootId: testBoot, Sequence: seq, HttpCalls: calls}
}

// callRow is an http_calls row as read back; pointers are NULLable columns.
type callRow struct {
	Time                time.Time
	AgentID             string
	ClientIP            *string
	ClientPort          *int32
	ServerIP            *string
	ServerPort          *int32
	Method              *string
	Host                *string
	Path                *string
	Query               *string
	HTTPVersion         *string
	Status              *int16
	DurationUs          *int64
	RequestStart        *time.Time
	RequestEnd          *time.Time
	ResponseStart       *time.Time
	ResponseEnd         *time.Time
	RequestHeaderSize   *int32
	RequestBodySize     *int64
	ResponseHeaderSize  *int32
	ResponseBodySize    *int64
	RequestContentType  *string
	ResponseContentType *string
	UserAgent           *string
	XForwardedFor       *string
	XRequestID          *string
	Traceparent         *string
	ParseStatus         string
}

func readCalls(t *testing.T, s *store.Store) []callRow {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(), `SELECT time, agent_id::text, client_ip::text, client_port,
		server_ip::text, server_port, method, host, path, query, http_version, status, duration_us,
		request_start, request_end, response_start, response_end,
		request_header_size, request_body_size, response_header_size, response_body_size,
		request_content_type, response_content_type, user_agent, x_forwarded_for, x_request_id, traceparent,
		parse_status FROM http_calls ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (callRow, error) {
		var c callRow
		err := r.Scan(&c.Time, &c.AgentID, &c.ClientIP, &c.ClientPort, &c.ServerIP, &c.ServerPort,
			&c.Method, &c.Host, &c.Path, &c.Query, &c.HTTPVersion, &c.Status, &c.DurationUs,
			&c.RequestStart, &c.RequestEnd, &c.ResponseStart, &c.ResponseEnd,
			&c.RequestHeaderSize, &c.RequestBodySize, &c.ResponseHeaderSize, &c.ResponseBodySize,
			&c.RequestContentType, &c.ResponseContentType, &c.UserAgent, &c.XForwardedFor, &c.XRequestID,
			&c.Traceparent, &c.ParseStatus)
		// Normalize locations so that reflect.DeepEqual compares instants.
		c.Time = c.Time.UTC()
		for _, p := range []*time.Time{c.RequestStart, c.RequestEnd, c.ResponseStart, c.ResponseEnd} {
			if p != nil {
				*p = p.UTC()
			}
		}
		return c, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func ptr[T any](v T) *T { return &v }

func TestInsertCallBatchColumns(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(us int64) time.Time { return base.Add(time.Duration(us) * time.Microsecond) }
	ns := func(us int64) int64 { return at(us).UnixNano() }
	v6 := netip.MustParseAddr("2001:db8::1").As16()
	mapped := netip.MustParseAddr("::ffff:192.0.2.7").As16()

	tests := []struct {
		name string
		call *orbweaverv1.HttpCall
		want callRow
	}{
		{
			name: "complete exchange, every field",
			call: &orbweaverv1.HttpCall{
				ClientIp: []byte{192, 168, 1, 10}, ClientPort: 51234, ServerIp: []byte{10, 1, 2, 3}, ServerPort: 8080,
				RequestStartNs: ns(0), RequestEndNs: ns(150), ResponseStartNs: ns(2500), ResponseEndNs: ns(3100),
				Method: "POST", Host: "api.internal:8080", Path: "/v1/orders/%2F42", Query: "a=1&b=%20",
				HttpVersion: "1.1", Status: 201,
				RequestHeaderSize: 312, RequestBodySize: 1 << 33, ResponseHeaderSize: 180, ResponseBodySize: 17,
				RequestContentType: "application/json", ResponseContentType: "text/plain; charset=utf-8",
				UserAgent: "curl/8.5.0", XForwardedFor: "203.0.113.9, 10.0.0.1", XRequestId: "req-1",
				Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ParseStatus: "ok",
			},
			want: callRow{
				Time: at(0), AgentID: testAgent,
				ClientIP: ptr("192.168.1.10/32"), ClientPort: ptr[int32](51234), ServerIP: ptr("10.1.2.3/32"), ServerPort: ptr[int32](8080),
				Method: ptr("POST"), Host: ptr("api.internal:8080"), Path: ptr("/v1/orders/%2F42"), Query: ptr("a=1&b=%20"),
				HTTPVersion: ptr("1.1"), Status: ptr[int16](201), DurationUs: ptr[int64](3100),
				RequestStart: ptr(at(0)), RequestEnd: ptr(at(150)), ResponseStart: ptr(at(2500)), ResponseEnd: ptr(at(3100)),
				RequestHeaderSize: ptr[int32](312), RequestBodySize: ptr[int64](1 << 33),
				ResponseHeaderSize: ptr[int32](180), ResponseBodySize: ptr[int64](17),
				RequestContentType: ptr("application/json"), ResponseContentType: ptr("text/plain; charset=utf-8"),
				UserAgent: ptr("curl/8.5.0"), XForwardedFor: ptr("203.0.113.9, 10.0.0.1"), XRequestID: ptr("req-1"),
				Traceparent: ptr("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ParseStatus: "ok",
			},
		},
		{
			name: "no response: status, duration and response times NULL, empty strings kept",
			call: &orbweaverv1.HttpCall{
				ClientIp: v6[:], ClientPort: 443, ServerIp: mapped[:], ServerPort: 9000,
				RequestStartNs: ns(10) + 999, RequestEndNs: ns(20),
				Method: "GET", Path: "/", HttpVersion: "1.0", RequestHeaderSize: 40, ParseStatus: "no_response",
			},
			want: callRow{
				// Sub-microsecond digits are truncated.
				Time: at(10), AgentID: testAgent,
				ClientIP: ptr("2001:db8::1/128"), ClientPort: ptr[int32](443), ServerIP: ptr("192.0.2.7/32"), ServerPort: ptr[int32](9000),
				Method: ptr("GET"), Host: ptr(""), Path: ptr("/"), Query: ptr(""), HTTPVersion: ptr("1.0"),
				RequestStart: ptr(at(10)), RequestEnd: ptr(at(20)),
				RequestHeaderSize: ptr[int32](40), RequestBodySize: ptr[int64](0),
				ResponseHeaderSize: ptr[int32](0), ResponseBodySize: ptr[int64](0),
				RequestContentType: ptr(""), ResponseContentType: ptr(""), UserAgent: ptr(""),
				XForwardedFor: ptr(""), XRequestID: ptr(""), Traceparent: ptr(""), ParseStatus: "no_response",
			},
		},
		{
			name: "no request: time is the response start; no addresses; NUL replaced",
			call: &orbweaverv1.HttpCall{
				ResponseStartNs: ns(500), ResponseEndNs: ns(700), Status: 503, ResponseHeaderSize: 90,
				UserAgent: "a\x00b", ParseStatus: "no_request",
			},
			want: callRow{
				Time: at(500), AgentID: testAgent,
				Method: ptr(""), Host: ptr(""), Path: ptr(""), Query: ptr(""), HTTPVersion: ptr(""),
				Status: ptr[int16](503), ResponseStart: ptr(at(500)), ResponseEnd: ptr(at(700)),
				RequestHeaderSize: ptr[int32](0), RequestBodySize: ptr[int64](0),
				ResponseHeaderSize: ptr[int32](90), ResponseBodySize: ptr[int64](0),
				RequestContentType: ptr(""), ResponseContentType: ptr(""), UserAgent: ptr("a\uFFFDb"),
				XForwardedFor: ptr(""), XRequestID: ptr(""), Traceparent: ptr(""), ParseStatus: "no_request",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			res, err := s.InsertCallBatch(context.Background(), batch(1, tt.call))
			if err != nil {
				t.Fatal(err)
			}
			if res != (store.BatchResult{Rows: 1}) {
				t.Errorf("result = %+v", res)
			}
			got := readCalls(t, s)
			if len(got) != 1 {
				t.Fatalf("%d rows", len(got))
			}
			if !reflect.DeepEqual(got[0], tt.want) {
				gv, wv := reflect.ValueOf(got[0]), reflect.ValueOf(tt.want)
				for i := 0; i < gv.NumField(); i++ {
					if !reflect.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
						t.Errorf("%s = %v, want %v", gv.Type().Field(i).Name, show(gv.Field(i)), show(wv.Field(i)))
					}
				}
			}
		})
	}
}

func show(v reflect.Value) any {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "NULL"
		}
		return v.Elem().Interface()
	}
	return v.Interface()
}

func TestInsertCallBatchDuplicate(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	now := time.Now()
	b := batch(7, call(now), call(now.Add(time.Millisecond)))
	steps := []struct {
		name  string
		batch *orbweaverv1.CallBatch
		want  store.BatchResult
		calls int64
	}{
		{"first", b, store.BatchResult{Rows: 2}, 2},
		{"resend", b, store.BatchResult{Duplicate: true}, 2},
		{"next sequence", batch(8, call(now)), store.BatchResult{Rows: 1}, 3},
		{"same sequence, new boot", &orbweaverv1.CallBatch{AgentId: testAgent, BootId: "11111111-2222-4333-8444-555555555555",
			Sequence: 7, HttpCalls: []*orbweaverv1.HttpCall{call(now)}}, store.BatchResult{Rows: 1}, 4},
		{"empty batch", batch(9), store.BatchResult{}, 4},
		{"empty batch resent", batch(9), store.BatchResult{Duplicate: true}, 4},
	}
	for _, st := range steps {
		res, err := s.InsertCallBatch(ctx, st.batch)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if res != st.want {
			t.Errorf("%s: result = %+v, want %+v", st.name, res, st.want)
		}
		if n, err := s.CountCalls(ctx, testAgent); err != nil || n != st.calls {
			t.Errorf("%s: CountCalls = %d, %v; want %d", st.name, n, err, st.calls)
		}
	}
	equalStrings(t, "ingested_batches",
		queryStrings(t, s, `SELECT agent_id || ' ' || boot_id || ' ' || sequence || ' ' || calls || ' ' || (received_at IS NOT NULL)
			FROM ingested_batches ORDER BY boot_id, sequence`),
		[]string{
			testAgent + " " + testBoot + " 7 2 true",
			testAgent + " " + testBoot + " 8 1 true",
			testAgent + " " + testBoot + " 9 0 true",
			testAgent + " 11111111-2222-4333-8444-555555555555 7 1 true",
		})
}

func TestInsertCallBatchConcurrentDuplicates(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	const rounds, callsPerBatch = 10, 50
	for seq := uint64(1); seq <= rounds; seq++ {
		calls := make([]*orbweaverv1.HttpCall, callsPerBatch)
		for i := range calls {
			calls[i] = call(time.Now())
		}
		b := batch(seq, calls...)
		var wg sync.WaitGroup
		start := make(chan struct{})
		results := make([]store.BatchResult, 2)
		errs := make([]error, 2)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				results[i], errs[i] = s.InsertCallBatch(ctx, b)
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("seq %d goroutine %d: %v", seq, i, err)
			}
		}
		stored := []store.BatchResult{{Rows: callsPerBatch}, {Duplicate: true}}
		if results[0] != stored[0] || results[1] != stored[1] {
			if results[1] != stored[0] || results[0] != stored[1] {
				t.Errorf("seq %d: results = %+v, want one of each of %+v", seq, results, stored)
			}
		}
	}
	if n, err := s.CountCalls(ctx, ""); err != nil || n != rounds*callsPerBatch {
		t.Errorf("CountCalls = %d, %v; want %d", n, err, rounds*callsPerBatch)
	}
}

func TestInsertCallBatchInvalid(t *testing.T) {
	now := time.Now()
	badIP := call(now)
	badIP.ServerIp = []byte{1, 2, 3}
	badStatus := call(now)
	badStatus.Status = 70000
	tests := []struct {
		name  string
		batch *orbweaverv1.CallBatch
		want  string
	}{
		{"agent id", &orbweaverv1.CallBatch{AgentId: "agent-1", BootId: testBoot, Sequence: 1},
			`store: insert batch: agent id "agent-1": invalid UUID length: 7`},
		{"boot id", &orbweaverv1.CallBatch{AgentId: testAgent, BootId: "", Sequence: 1},
			`store: insert batch: boot id "": invalid UUID length: 0`},
		{"sequence", &orbweaverv1.CallBatch{AgentId: testAgent, BootId: testBoot, Sequence: math.MaxInt64 + 1},
			`store: insert batch: sequence 9223372036854775808 out of range`},
		{"ip length", batch(1, call(now), badIP),
			"store: insert batch " + testAgent + "/" + testBoot + "/1: encode calls: call 1: server ip: 3 bytes: want 4 or 16 bytes"},
		{"status", batch(1, badStatus),
			"store: insert batch " + testAgent + "/" + testBoot + "/1: encode calls: call 0: status 70000 out of range"},
		{"nil call", batch(1, nil),
			"store: insert batch " + testAgent + "/" + testBoot + "/1: encode calls: call 0: nil call"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			_, err := s.InsertCallBatch(context.Background(), tt.batch)
			if err == nil || err.Error() != tt.want {
				t.Errorf("error = %v\nwant    %s", err, tt.want)
			}
			// Nothing is stored, not even the batch id: a fixed resend is accepted.
			equalStrings(t, "stored", queryStrings(t, s,
				"SELECT (SELECT count(*) FROM http_calls) || ' ' || (SELECT count(*) FROM ingested_batches)"), []string{"0 0"})
		})
	}
}

func TestCountCallsBadID(t *testing.T) {
	s := open(t)
	_, err := s.CountCalls(context.Background(), "nope")
	if err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("err = %v", err)
	}
}

// derivedRow holds the columns of migration 0007 as read back (text forms;
// nil is NULL).
type derivedRow struct {
	Identification, Origin, Template, JWTIss, JWTSub, JWTAud *string
	JWTIat, JWTNbf, JWTExp                                   *time.Time
	NotYetValid, Expired                                     *bool
	Credentials                                              *int16
	Multiple                                                 *bool
	ReqHeaders, RespHeaders                                  *string
	ReqEncoding, RespEncoding, ReqBody, RespBody             *string
	ReqDecoded, RespDecoded                                  *int32
	ReqTruncated, RespTruncated                              *bool
	ReqRetrans, RespRetrans                                  *int32
}

func readDerived(t *testing.T, s *store.Store) []derivedRow {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(), `SELECT identification, host(origin), template,
		jwt_iss, jwt_sub, jwt_aud, jwt_iat, jwt_nbf, jwt_exp, token_not_yet_valid, token_expired,
		credentials_count, multiple_credentials, request_headers::text, response_headers::text,
		request_content_encoding, response_content_encoding, request_body, response_body,
		request_body_decoded_size, response_body_decoded_size, request_body_truncated, response_body_truncated,
		request_retransmissions, response_retransmissions FROM http_calls ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (derivedRow, error) {
		var d derivedRow
		err := r.Scan(&d.Identification, &d.Origin, &d.Template, &d.JWTIss, &d.JWTSub, &d.JWTAud,
			&d.JWTIat, &d.JWTNbf, &d.JWTExp, &d.NotYetValid, &d.Expired, &d.Credentials, &d.Multiple,
			&d.ReqHeaders, &d.RespHeaders, &d.ReqEncoding, &d.RespEncoding, &d.ReqBody, &d.RespBody,
			&d.ReqDecoded, &d.RespDecoded, &d.ReqTruncated, &d.RespTruncated, &d.ReqRetrans, &d.RespRetrans)
		for _, p := range []*time.Time{d.JWTIat, d.JWTNbf, d.JWTExp} {
			if p != nil {
				*p = p.UTC()
			}
		}
		return d, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestInsertCallBatchDerivedFields checks the columns of migration 0007.
func TestInsertCallBatchDerivedFields(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	withFields := call(base)
	withFields.Identification = "alice"
	withFields.OriginIp = []byte{203, 0, 113, 7}
	withFields.Template = "/users/{id}"
	withFields.JwtIss, withFields.JwtSub, withFields.JwtAud = "iam", "alice", "api,admin"
	withFields.JwtIatNs, withFields.JwtNbfNs, withFields.JwtExpNs = base.Add(-time.Minute).UnixNano(), base.Add(time.Millisecond).UnixNano(), base.Add(time.Hour).UnixNano()
	withFields.TokenNotYetValid = true
	withFields.CredentialsCount, withFields.MultipleCredentials = 2, true
	withFields.RequestHeaders = `{"authorization":"Bearer hmac:0123456789abcdef","x":"a\u0000b"}`
	withFields.ResponseHeaders = `{"set-cookie":"sid=hmac:00"` // not valid JSON: NULL
	withFields.ResponseContentEncoding = "gzip"
	withFields.RequestBody, withFields.ResponseBody = ptr(""), ptr("hello\x00\xff")
	withFields.ResponseBodyDecodedSize, withFields.ResponseBodyTruncated = 7, true
	withFields.RequestRetransmissions, withFields.ResponseRetransmissions = 1, 3
	noRequest := call(base.Add(time.Second))
	noRequest.Method, noRequest.RequestStartNs, noRequest.RequestEndNs, noRequest.ParseStatus = "", 0, 0, "no_request"
	noRequest.RequestHeaders = `{"x":"a\ud800b"}`                    // half a surrogate pair: PostgreSQL refuses it, NULL
	noRequest.ResponseHeaders = `{"x":"\ud83d\ude00","y":"\\ud800"}` // a pair, and an escaped backslash

	want := []derivedRow{
		{
			Identification: ptr("alice"), Origin: ptr("203.0.113.7"), Template: ptr("/users/{id}"),
			JWTIss: ptr("iam"), JWTSub: ptr("alice"), JWTAud: ptr("api,admin"),
			JWTIat: ptr(base.Add(-time.Minute)), JWTNbf: ptr(base.Add(time.Millisecond)), JWTExp: ptr(base.Add(time.Hour)),
			NotYetValid: ptr(true), Expired: ptr(false), Credentials: ptr[int16](2), Multiple: ptr(true),
			ReqHeaders:  ptr(`{"x": "a�b", "authorization": "Bearer hmac:0123456789abcdef"}`),
			ReqEncoding: ptr(""), RespEncoding: ptr("gzip"), ReqBody: ptr(""), RespBody: ptr("hello\uFFFD\uFFFD"),
			ReqDecoded: ptr[int32](0), RespDecoded: ptr[int32](7), ReqTruncated: ptr(false), RespTruncated: ptr(true),
			ReqRetrans: ptr[int32](1), RespRetrans: ptr[int32](3),
		},
		{
			// No request: request-side fields NULL; no body captured.
			Template: nil, RespHeaders: ptr(`{"x": "😀", "y": "\\ud800"}`),
			ReqEncoding: ptr(""), RespEncoding: ptr(""), ReqRetrans: ptr[int32](0), RespRetrans: ptr[int32](0),
		},
	}
	s := open(t)
	if _, err := s.InsertCallBatch(context.Background(), batch(1, withFields, noRequest)); err != nil {
		t.Fatal(err)
	}
	got := readDerived(t, s)
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("row %d:\n got %s\nwant %s", i, fmtRow(got[i]), fmtRow(want[i]))
		}
	}
}

// fmtRow shows every field of d, NULL for nil.
func fmtRow(d derivedRow) string {
	v := reflect.ValueOf(d)
	var b strings.Builder
	for i := 0; i < v.NumField(); i++ {
		fmt.Fprintf(&b, "%s=%v ", v.Type().Field(i).Name, show(v.Field(i)))
	}
	return b.String()
}

func TestInsertCallBatches(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	now := time.Now()
	badIP := call(now)
	badIP.ServerIp = []byte{1, 2, 3}
	if _, err := s.InsertCallBatch(ctx, batch(1, call(now))); err != nil {
		t.Fatal(err)
	}
	b2 := batch(2, call(now), call(now))
	batches := []*orbweaverv1.CallBatch{
		batch(1, call(now)), // stored before
		b2,
		batch(3, call(now), badIP),
		{AgentId: "agent-1", BootId: testBoot, Sequence: 4},
		b2, // the same batch twice in one call
		batch(5),
		batch(6, call(now), call(now), call(now)),
	}
	res, err := s.InsertCallBatches(ctx, batches)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]string, len(res))
	for i, r := range res {
		got[i] = fmt.Sprintf("dup=%v rows=%d err=%v", r.Duplicate, r.Rows, r.Err)
	}
	equalStrings(t, "results", got, []string{
		"dup=true rows=0 err=<nil>",
		"dup=false rows=2 err=<nil>",
		"dup=false rows=0 err=store: insert batch " + testAgent + "/" + testBoot + "/3: encode calls: call 1: server ip: 3 bytes: want 4 or 16 bytes",
		`dup=false rows=0 err=store: insert batch: agent id "agent-1": invalid UUID length: 7`,
		"dup=true rows=0 err=<nil>",
		"dup=false rows=0 err=<nil>",
		"dup=false rows=3 err=<nil>",
	})
	equalStrings(t, "ingested_batches", queryStrings(t, s, "SELECT sequence || ' ' || calls FROM ingested_batches ORDER BY sequence"),
		[]string{"1 1", "2 2", "5 0", "6 3"})
	if n, err := s.CountCalls(ctx, testAgent); err != nil || n != 6 {
		t.Errorf("CountCalls = %d, %v; want 6", n, err)
	}
	// The refused batch, fixed, is accepted.
	if r, err := s.InsertCallBatch(ctx, batch(3, call(now))); err != nil || r != (store.BatchResult{Rows: 1}) {
		t.Errorf("fixed batch 3: %+v, %v", r, err)
	}
}

// Writers storing overlapping groups of batches in opposite orders store
// each batch once and do not deadlock.
func TestInsertCallBatchesConcurrentOverlap(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	const n = 40
	batches := make([]*orbweaverv1.CallBatch, n)
	for i := range batches {
		batches[i] = batch(uint64(i+1), call(time.Now()), call(time.Now()))
	}
	reversed := make([]*orbweaverv1.CallBatch, n)
	for i, b := range batches {
		reversed[n-1-i] = b
	}
	var wg sync.WaitGroup
	results := make([][]store.BatchResult, 4)
	errs := make([]error, 4)
	for w := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			group := batches
			if w%2 == 1 {
				group = reversed
			}
			results[w], errs[w] = s.InsertCallBatches(ctx, group)
		}()
	}
	wg.Wait()
	stored := map[uint64]int{}
	for w, res := range results {
		if errs[w] != nil {
			t.Fatalf("writer %d: %v", w, errs[w])
		}
		group := batches
		if w%2 == 1 {
			group = reversed
		}
		for i, r := range res {
			if r.Err != nil {
				t.Fatalf("writer %d batch %d: %v", w, group[i].GetSequence(), r.Err)
			}
			if !r.Duplicate {
				stored[group[i].GetSequence()]++
			}
		}
	}
	for seq := uint64(1); seq <= n; seq++ {
		if stored[seq] != 1 {
			t.Errorf("batch %d stored %d times by the writers", seq, stored[seq])
		}
	}
	if c, err := s.CountCalls(ctx, ""); err != nil || c != 2*n {
		t.Errorf("CountCalls = %d, %v; want %d", c, err, 2*n)
	}
}
