package pipeline

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"

	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/model"
)

// TestPipelineRetransmissionsPerDirection: retransmitted segments are
// counted on the message of their direction.
func TestPipelineRetransmissionsPerDirection(t *testing.T) {
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 100, 200).handshake()
	r := c.req(req1)
	c.frames = append(c.frames, c.frames[r]) // request segment sent twice
	a := c.resp(resp1[:30])
	c.frames = append(c.frames, c.frames[a], c.frames[a]) // twice more
	c.resp(resp1[30:])
	calls, p := run(t, Config{}, c.frames, true)
	if got := statuses(calls); got != "GET /one ok;" {
		t.Fatalf("calls %s", got)
	}
	if calls[0].RequestRetransmissions != 0 || calls[0].ResponseRetransmissions != 2 {
		// The request's duplicate arrives after the request ended: it is
		// counted on the next request of that side (none here).
		t.Errorf("retransmissions request %d response %d", calls[0].RequestRetransmissions, calls[0].ResponseRetransmissions)
	}
	if st := p.Stats(); st.Retransmissions != 3 {
		t.Errorf("stats %+v", st)
	}
}

// TestPipelineParsingConfig: ParsingFromProto flows into the calls: extra
// redacted header, all headers, body capture with a cap, template rules.
func TestPipelineParsingConfig(t *testing.T) {
	pc := &orbweaverv1.ParsingConfig{
		AllHeaders:    true,
		HeadersRedact: []string{"X-Request-Id"},
		CaptureBodies: true,
		BodyMaxBytes:  4,
		TemplateRules: []*orbweaverv1.TemplateRule{{Pattern: "^/one$", Template: "/{first}"}},
	}
	opts, err := ParsingFromProto(pc)
	if err != nil {
		t.Fatal(err)
	}
	opts.Salt = []byte("fixed")
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 100, 200).handshake()
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:pw"))
	c.req(strings.Replace(req1, "\r\n\r\n", "\r\nAuthorization: "+auth+"\r\nX-Forwarded-For: 198.51.100.4\r\n\r\n", 1))
	c.resp(resp1)
	calls, _ := run(t, Config{Parsing: opts}, c.frames, true)
	if len(calls) != 1 {
		t.Fatalf("%d calls", len(calls))
	}
	call := calls[0]
	if call.Template != "/{first}" || call.Identification != "ops" || call.Origin.String() != "198.51.100.4" || call.CredentialsCount != 1 {
		t.Errorf("template %q identification %q origin %v credentials %d", call.Template, call.Identification, call.Origin, call.CredentialsCount)
	}
	if strings.Contains(call.RequestHeaders, "r1") || strings.Contains(call.RequestHeaders, auth[6:]) ||
		!strings.Contains(call.RequestHeaders, `"host":"svc"`) || !strings.Contains(call.RequestHeaders, `"x-request-id":"hmac:`) {
		t.Errorf("request headers %s", call.RequestHeaders)
	}
	if !call.ResponseBodyCaptured || call.ResponseBody != "0123" || !call.ResponseBodyTruncated || call.ResponseBodySize != 10 {
		t.Errorf("response body %q truncated %v size %d", call.ResponseBody, call.ResponseBodyTruncated, call.ResponseBodySize)
	}

	bad := &orbweaverv1.ParsingConfig{TemplateRules: []*orbweaverv1.TemplateRule{{Pattern: "^/ok$"}, {Pattern: "(("}}}
	if _, err := ParsingFromProto(bad); err == nil || !strings.Contains(err.Error(), "parsing.template_rules[1].pattern") {
		t.Errorf("bad rule: %v", err)
	}
	// New keeps working with an invalid rule (Validate reports it).
	cfg := Config{Parsing: ParsingOptions{TemplateRules: []TemplateRule{{Pattern: "(("}}}}
	if err := cfg.Validate(); err == nil {
		t.Errorf("Validate accepted an invalid rule")
	}
	if calls, _ := run(t, cfg, c.frames, true); len(calls) != 1 {
		t.Errorf("%d calls with an invalid rule", len(calls))
	}
}

// TestPipelineDefaultFields: with the default configuration every call has
// an origin and a template, and no body.
func TestPipelineDefaultFields(t *testing.T) {
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 100, 200).handshake()
	c.req(strings.Replace(req1, "/one", "/items/123", 1))
	c.resp(resp1)
	calls, _ := run(t, Config{}, c.frames, true)
	call := calls[0]
	if call.Origin.String() != "10.0.0.1" || call.Template != "/items/{id}" || call.Path != "/items/123" || call.ResponseBodyCaptured {
		t.Errorf("origin %v template %q path %q body captured %v", call.Origin, call.Template, call.Path, call.ResponseBodyCaptured)
	}
	if call.ResponseHeaders != `{"content-length":"10"}` {
		t.Errorf("response headers %s", call.ResponseHeaders)
	}
}

// TestPipelineZeroAllocPackets: with derived fields on (default config),
// packets that do not finish a message — pure ACKs and body segments —
// allocate nothing. (Packets that finish a call cost the call's few
// allocations: TestPipelineInOrderAllocs.)
func TestPipelineZeroAllocPackets(t *testing.T) {
	c := newConv("10.0.0.1:50000", "10.0.0.2:8080", 100, 200).handshake()
	c.req(req1)
	c.resp("HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
	start := len(c.frames)
	body := strings.Repeat("b", 1400)
	for range 50 {
		c.resp(body)
		c.ack(true)
	}
	p := New(DefaultConfig(), func(*model.HTTPCall) {})
	for _, f := range c.frames[:start] {
		p.Packet(layers.LinkTypeEthernet, f, base)
	}
	i := start
	allocs := testing.AllocsPerRun(len(c.frames)-start-1, func() {
		p.Packet(layers.LinkTypeEthernet, c.frames[i], base)
		i++
	})
	if allocs != 0 {
		t.Errorf("%.2f allocations per body or ACK packet", allocs)
	}
}
