package http1

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/orbweaver/orbweaver/agent/decode/httpfields"
	"github.com/orbweaver/orbweaver/internal/model"

	"github.com/orbweaver/orbweaver/agent/membudget"
)

// newFieldsHarness is newHarness with derived fields on.
func newFieldsHarness(t *testing.T, cfg httpfields.Config) *harness {
	t.Helper()
	h := newHarness(true)
	cfg.Salt = []byte("salt")
	x, err := httpfields.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.opts.Fields = x
	h.opts.Budget = membudget.NewLimit(1 << 20)
	return h
}

func gz(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestConnDerivedFields runs a request with a JWT, a client certificate and
// X-Forwarded-For, and a gzip chunked response, with body capture on, split
// at every position: fields must not depend on segmentation.
func TestConnDerivedFields(t *testing.T) {
	enc := base64.RawURLEncoding
	// nbf is 1 ms after the request's capture time t0: not yet valid.
	tok := enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." +
		enc.EncodeToString([]byte(fmt.Sprintf(`{"iss":"iam","sub":"alice","aud":"api","nbf":%d.001,"exp":%d}`, t0.Unix(), t0.Unix()+60))) + ".sig"
	reqBody := `{"q":1}`
	req := "POST /v1/users/42/orders HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer " + tok +
		"\r\nX-SSL-Client-Cert: MIIB...\r\nX-Forwarded-For: 203.0.113.7, 10.0.0.9\r\nCookie: sid=secret\r\nContent-Length: " +
		fmt.Sprint(len(reqBody)) + "\r\n\r\n" + reqBody
	zipped := gz(t, strings.Repeat("response text ", 20))
	resp := "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nSet-Cookie: sid=secret2; Path=/\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(zipped), zipped)
	for split := 0; split < len(req)+len(resp); split += 7 {
		h := newFieldsHarness(t, httpfields.Config{CaptureBodies: true, BodyMaxBytes: 100})
		h.run([]step{c2s(req), s2c(resp)}, split)
		if len(h.calls) != 1 {
			t.Fatalf("split %d: %d calls", split, len(h.calls))
		}
		c := h.calls[0]
		want := []struct {
			name      string
			got, want any
		}{
			{"identification", c.Identification, "alice"},
			{"jwt", fmt.Sprint(c.JWTIssuer, c.JWTSubject, c.JWTAudience), "iamaliceapi"},
			{"nbf", c.JWTNotBefore, t0.Add(time.Millisecond)},
			{"exp", c.JWTExpires, t0.Add(time.Minute)},
			{"iat absent", c.JWTIssuedAt.IsZero(), true},
			{"not yet valid", c.TokenNotYetValid, true},
			{"expired", c.TokenExpired, false},
			{"credentials", fmt.Sprint(c.CredentialsCount, c.MultipleCredentials), "2 true"},
			{"origin", c.Origin.String(), "203.0.113.7"},
			{"template", c.Template, "/v1/users/{id}/orders"},
			// Default header set, secrets hashed (fixed salt).
			{"request headers", c.RequestHeaders, `{"authorization":"Bearer hmac:2b6f52aab39fc5bf","cookie":"sid=hmac:98e5340f0f4f96d2","content-length":"7"}`},
			{"request body", fmt.Sprintf("%v %v %v %v", c.RequestBodyCaptured, c.RequestBody, c.RequestBodyDecodedSize, c.RequestBodyTruncated), `true {"q":1} 7 false`},
			{"response encoding", c.ResponseContentEncoding, "gzip"},
			{"response body", fmt.Sprintf("%v %v %v %v", c.ResponseBodyCaptured, c.ResponseBody, c.ResponseBodyDecodedSize, c.ResponseBodyTruncated),
				"true " + strings.Repeat("response text ", 20)[:100] + " 100 true"},
			{"response body size on the wire", c.ResponseBodySize, int64(len(zipped))},
		}
		for _, w := range want {
			if fmt.Sprint(w.got) != fmt.Sprint(w.want) {
				t.Errorf("split %d: %s = %v, want %v", split, w.name, w.got, w.want)
			}
		}
		if strings.Contains(c.RequestHeaders+c.ResponseHeaders, "secret") || strings.Contains(c.RequestHeaders, tok) {
			t.Errorf("secret in clear: %s %s", c.RequestHeaders, c.ResponseHeaders)
		}
		if h.opts.Budget.(*membudget.Limit).Used() != 0 {
			t.Errorf("split %d: budget %d after close", split, h.opts.Budget.(*membudget.Limit).Used())
		}
	}
}

// TestConnFieldsDefaults: without body capture no body is kept; without
// forwarding headers the origin is the client; a path without ids is its
// own template.
func TestConnFieldsDefaults(t *testing.T) {
	h := newFieldsHarness(t, httpfields.Config{})
	h.run([]step{c2s(postReq), s2c(okResp)}, 0)
	c := h.calls[0]
	if c.RequestBodyCaptured || c.ResponseBodyCaptured || c.RequestBody != "" || c.ResponseBody != "" {
		t.Errorf("bodies captured: %+v", *c)
	}
	if c.Origin != cliAddr.Addr() || c.Template != "/p" || c.Identification != "" || c.CredentialsCount != 0 {
		t.Errorf("origin %v template %q identification %q credentials %d", c.Origin, c.Template, c.Identification, c.CredentialsCount)
	}
	// A response without its request has no request-side fields.
	h = newFieldsHarness(t, httpfields.Config{})
	h.conn = NewConn(&h.opts, cliAddr, srvAddr, func(c *model.HTTPCall) { h.calls = append(h.calls, c) })
	h.run([]step{s2c(okResp)}, 0)
	if c := h.calls[0]; c.ParseStatus != model.StatusNoRequest || c.Origin.IsValid() || c.Template != "" {
		t.Errorf("no-request call: %+v", *c)
	}
}

// TestConnBodyBudget: body capture stops when the shared budget is spent,
// and the body is marked truncated.
func TestConnBodyBudget(t *testing.T) {
	h := newFieldsHarness(t, httpfields.Config{CaptureBodies: true, BodyMaxBytes: 1 << 20})
	// Room for the call's charges and 1000 bytes more.
	h.opts.Budget = membudget.NewLimit(exchangeCost + int64(len(getReq)+len("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n")) + 1000)
	body := strings.Repeat("b", 5000)
	h.run([]step{c2s(getReq), s2c("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + body[:2000]), s2c(body[2000:])}, 0)
	c := h.calls[0]
	if !c.ResponseBodyTruncated || c.ResponseBodyDecodedSize > 1000 || c.ResponseBodySize != 5000 {
		t.Errorf("truncated %v decoded %d wire %d", c.ResponseBodyTruncated, c.ResponseBodyDecodedSize, c.ResponseBodySize)
	}
	if h.opts.Budget.(*membudget.Limit).Used() != 0 {
		t.Errorf("budget %d after close", h.opts.Budget.(*membudget.Limit).Used())
	}
}
