package callconv

import (
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/model"
)

var update = flag.Bool("update", false, "rewrite golden files")

func sample() *model.HTTPCall {
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)
	return &model.HTTPCall{
		ClientAddr:          netip.MustParseAddrPort("10.0.0.1:51000"),
		ServerAddr:          netip.MustParseAddrPort("[2001:db8::1]:8080"),
		RequestStart:        t0,
		RequestEnd:          t0.Add(10 * time.Microsecond),
		ResponseStart:       t0.Add(1500 * time.Microsecond),
		ResponseEnd:         t0.Add(2500 * time.Microsecond),
		Method:              "GET",
		Host:                "api.example",
		Path:                "/v1/items/42",
		Query:               "q=\"x\"&u=\x01\xff",
		HTTPVersion:         "1.1",
		Status:              200,
		RequestHeaderSize:   120,
		ResponseHeaderSize:  90,
		ResponseBodySize:    512,
		ResponseContentType: "application/json",
		UserAgent:           "curl/8",
		XRequestID:          "abc",
		ParseStatus:         model.StatusOK,

		Identification:          "alice",
		Origin:                  netip.MustParseAddr("203.0.113.7"),
		Template:                "/v1/items/{id}",
		JWTIssuer:               "https://iam.example",
		JWTSubject:              "alice",
		JWTAudience:             "api,admin",
		JWTIssuedAt:             t0.Add(-time.Minute),
		JWTNotBefore:            t0.Add(time.Millisecond),
		JWTExpires:              t0.Add(time.Hour),
		TokenNotYetValid:        true,
		CredentialsCount:        2,
		MultipleCredentials:     true,
		RequestHeaders:          `{"authorization":"Bearer hmac:0123456789abcdef","accept":"*/*"}`,
		ResponseHeaders:         `{"set-cookie":"sid=hmac:fedcba9876543210"}`,
		ResponseContentEncoding: "gzip",
		ResponseBody:            "{\"items\":[]}",
		ResponseBodyCaptured:    true,
		ResponseBodyDecodedSize: 12,
		ResponseBodyTruncated:   false,
		RequestRetransmissions:  1,
	}
}

func TestProtoRoundTrip(t *testing.T) {
	c := sample()
	c.Query = "q=\"x\"&u=\x01" // valid UTF-8: invalid bytes do not survive (see TestToProtoAlwaysMarshals)
	p := ToProto(c)
	if len(p.ClientIp) != 4 || len(p.ServerIp) != 16 {
		t.Fatalf("ip lengths = %d, %d; want 4, 16", len(p.ClientIp), len(p.ServerIp))
	}
	back := FromProto(p)
	if *back != *c {
		t.Fatalf("round trip changed the call:\n got %+v\nwant %+v", back, c)
	}
	if !proto.Equal(ToProto(back), p) {
		t.Fatalf("second conversion differs")
	}
	if p.RequestBody != nil || p.ResponseBody == nil {
		t.Fatalf("bodies: request %v (want absent), response %v", p.RequestBody, p.ResponseBody)
	}
	// The wire form must marshal and survive it (the sample's query is
	// made valid UTF-8 first: protobuf strings must be).
	valid := *c
	valid.Query = "q=1"
	wire, err := proto.Marshal(ToProto(&valid))
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var p2 orbweaverv1.HttpCall
	if err := proto.Unmarshal(wire, &p2); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if back2 := FromProto(&p2); *back2 != valid {
		t.Fatalf("wire round trip changed the call:\n got %+v\nwant %+v", back2, valid)
	}
	now := time.Unix(1800000000, 0)
	if got := CallTime(p, now); !got.Equal(c.RequestStart) {
		t.Fatalf("CallTime = %v", got)
	}
	noReq := &model.HTTPCall{ResponseStart: c.ResponseStart, Status: 200, ParseStatus: model.StatusNoRequest}
	if got := CallTime(ToProto(noReq), now); !got.Equal(c.ResponseStart) {
		t.Fatalf("CallTime without request = %v", got)
	}
	if got := CallTime(&orbweaverv1.HttpCall{}, now); !got.Equal(now) {
		t.Fatalf("CallTime without any timestamp = %v, want now", got)
	}
}

func TestAppendJSONGolden(t *testing.T) {
	noResp := &model.HTTPCall{
		ClientAddr:   netip.MustParseAddrPort("127.0.0.1:40000"),
		ServerAddr:   netip.MustParseAddrPort("127.0.0.1:80"),
		RequestStart: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		RequestEnd:   time.Date(2026, 1, 2, 3, 4, 5, 1000, time.UTC),
		Method:       "POST", Path: "/", HTTPVersion: "1.0",
		ParseStatus: model.StatusNoResponse,
	}
	var out []byte
	for _, c := range []*model.HTTPCall{sample(), noResp} {
		line := AppendJSON(nil, c)
		var v map[string]any
		if err := json.Unmarshal(line, &v); err != nil {
			t.Fatalf("invalid JSON %s: %v", line, err)
		}
		out = append(append(out, line...), '\n')
	}
	const golden = "testdata/calls.jsonl"
	if *update {
		if err := os.WriteFile(golden, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(out) != string(want) {
		t.Fatalf("JSON differs from %s:\n got %s\nwant %s", golden, out, want)
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	c := sample()
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendJSON(buf[:0], c)
	}
}

func TestToProtoAlwaysMarshals(t *testing.T) {
	bad := "\xff\xfe/x\x80"
	c := &model.HTTPCall{
		Method: bad, Host: bad, Path: bad, Query: bad, HTTPVersion: bad, RequestContentType: bad, ResponseContentType: bad,
		UserAgent: bad, XForwardedFor: bad, XRequestID: bad, Traceparent: bad, Identification: bad, Template: bad,
		JWTIssuer: bad, JWTSubject: bad, JWTAudience: bad, RequestHeaders: bad, ResponseHeaders: bad,
		RequestContentEncoding: bad, ResponseContentEncoding: bad, ParseStatus: model.ParseStatus(bad),
	}
	p := ToProto(c)
	if _, err := proto.Marshal(p); err != nil {
		t.Fatalf("a call with invalid UTF-8 does not marshal: %v", err)
	}
	if p.GetPath() != "\ufffd/x\ufffd" {
		t.Fatalf("path = %q", p.GetPath())
	}
}
