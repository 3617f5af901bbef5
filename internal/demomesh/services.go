package demomesh

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Behaviour of the demo services.
const (
	minLatency = time.Millisecond
	maxLatency = 30 * time.Millisecond
	// knownOrders: order ids 1..knownOrders exist; others are 404.
	knownOrders = 999
	// paymentFailureRate is the share of POST /payments answered 500.
	paymentFailureRate = 0.02
	maxBody            = 1 << 20
)

// handlers holds what the services' handlers need: downstream base URLs.
type handlers struct {
	log                         *slog.Logger
	orders, inventory, payments string
}

// ---- frontend ----

func (h *handlers) frontendMux(s *service) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		claims, err := bearerClaims(r, time.Now())
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orbweaver-demo", error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": err.Error()})
			return
		}
		if !pause(r.Context()) {
			return
		}
		req, err := h.downstream(r, http.MethodGet, h.orders+"/orders/"+r.PathValue("id"), nil)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		req.Header.Set("Authorization", r.Header.Get("Authorization"))
		setForwardedFor(req, r)
		status, body, err := call(s.client, req)
		switch {
		case err != nil:
			h.log.Warn("call orders", "service", s.name, "err", err)
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": "orders unavailable"})
		case status == http.StatusOK:
			writeJSON(w, http.StatusOK, map[string]any{"user": claims.Subject, "order": body})
		case status == http.StatusNotFound:
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "order not found"})
		default:
			writeJSON(w, http.StatusBadGateway, map[string]any{"error": "orders failed", "upstream_status": status})
		}
	})
	mux.HandleFunc("GET /api/catalog", h.catalog)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return mux
}

// withRequestID gives every request an x-request-id (kept from the client
// or generated) that downstream calls carry and the response echoes.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("x-request-id")
		if id == "" {
			id = randomHex(16)
			r.Header.Set("x-request-id", id)
		}
		w.Header().Set("x-request-id", id)
		next.ServeHTTP(w, r)
	})
}

// catalog streams a JSON array of items with chunked transfer encoding,
// flushing after each item.
func (h *handlers) catalog(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, "[")
	for i := range 8 {
		if i > 0 {
			io.WriteString(w, ",")
		}
		item, _ := json.Marshal(map[string]any{"sku": skuFor(i*37 + 1), "name": fmt.Sprintf("Widget %d", i), "price_cents": 999 + 250*i})
		w.Write(item)
		if err := rc.Flush(); err != nil {
			h.log.Warn("flush catalog", "err", err)
			return
		}
		t := time.NewTimer(2 * time.Millisecond)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	io.WriteString(w, "]\n")
}

// ---- orders ----

func (h *handlers) ordersMux(s *service) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		if !pause(r.Context()) {
			return
		}
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil || id < 1 || id > knownOrders {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such order", "id": r.PathValue("id")})
			return
		}
		sku := skuFor(id)
		warehouse := fmt.Sprintf("wh-%d", id%3+1)
		req, err := h.downstream(r, http.MethodGet, h.inventory+"/items/"+sku+"?warehouse="+warehouse, nil)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		status, item, err := call(s.client, req)
		if err != nil || (status != http.StatusOK && status != http.StatusNotFound) {
			writeJSON(w, http.StatusBadGateway, map[string]any{"error": "inventory failed", "upstream_status": status})
			return
		}
		order := map[string]any{
			"id":        id,
			"sku":       sku,
			"quantity":  id%4 + 1,
			"warehouse": warehouse,
			"client_ip": clientIP(r),
			"trace":     traceInfo(r),
			"item":      item,
			"available": status == http.StatusOK,
		}
		// Every third order is still awaiting payment: charge it now.
		if id%3 == 0 {
			payment, _ := json.Marshal(map[string]any{
				"order_id":     strconv.Itoa(id),
				"amount_cents": 1000 + id*7,
				"currency":     "EUR",
				"card_token":   "tok_demo_" + strconv.Itoa(id%10),
			})
			req, err := h.downstream(r, http.MethodPost, h.payments+"/payments", payment)
			if err != nil {
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
				return
			}
			req.Header.Set("Content-Type", "application/json")
			req.SetBasicAuth("orders-svc", "demo-secret")
			status, paid, err := call(s.client, req)
			if err != nil || status != http.StatusCreated {
				writeJSON(w, http.StatusBadGateway, map[string]any{"error": "payment failed", "upstream_status": status})
				return
			}
			order["payment"] = paid
		}
		writeJSON(w, http.StatusOK, order)
	})
	return mux
}

// skuFor maps an order id to a SKU; every 13th is discontinued, and
// inventory does not know it.
func skuFor(id int) string {
	if id%13 == 0 {
		return fmt.Sprintf("SKU-X%04d", id)
	}
	return fmt.Sprintf("SKU-%04d", id%200)
}

// ---- inventory ----

func (h *handlers) inventoryMux(*service) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{sku}", func(w http.ResponseWriter, r *http.Request) {
		if !pause(r.Context()) {
			return
		}
		sku := r.PathValue("sku")
		warehouse := r.URL.Query().Get("warehouse")
		if warehouse == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "warehouse is required"})
			return
		}
		if strings.HasPrefix(sku, "SKU-X") {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown sku", "sku": sku})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"sku":       sku,
			"warehouse": warehouse,
			"in_stock":  rand.IntN(50),
			"trace":     traceInfo(r),
		})
	})
	return mux
}

// ---- payments ----

type paymentRequest struct {
	OrderID     string `json:"order_id"`
	AmountCents int    `json:"amount_cents"`
	Currency    string `json:"currency"`
	CardToken   string `json:"card_token"`
}

func (h *handlers) paymentsMux(*service) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /payments", func(w http.ResponseWriter, r *http.Request) {
		var p paymentRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil || p.OrderID == "" || p.AmountCents <= 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid payment request"})
			return
		}
		if !pause(r.Context()) {
			return
		}
		if rand.Float64() < paymentFailureRate {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "card processor timeout"})
			return
		}
		writeJSON(w, http.StatusCreated, map[string]any{
			"payment_id":   "pay_" + randomHex(8),
			"order_id":     p.OrderID,
			"amount_cents": p.AmountCents,
			"currency":     p.Currency,
			"status":       "captured",
		})
	})
	return mux
}

// ---- shared helpers ----

// pause sleeps a random 1–30 ms, the service's "work". It returns false if
// the request was cancelled meanwhile.
func pause(ctx context.Context) bool {
	t := time.NewTimer(minLatency + rand.N(maxLatency-minLatency+1))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// downstream builds a request to another service carrying in's trace
// context: the same trace id with a new span id, and the same
// x-request-id.
func (h *handlers) downstream(in *http.Request, method, url string, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(in.Context(), method, url, rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("traceparent", childTraceparent(in.Header.Get("traceparent")))
	if id := in.Header.Get("x-request-id"); id != "" {
		req.Header.Set("x-request-id", id)
	}
	req.Header.Set("User-Agent", "orbweaver-demomesh/1.0")
	return req, nil
}

// call sends req and decodes a JSON response body (nil if none).
func call(c *http.Client, req *http.Request) (status int, body any, err error) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("read %s response: %w", req.URL.Path, err)
	}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &body); err != nil {
			return resp.StatusCode, nil, fmt.Errorf("decode %s response: %w", req.URL.Path, err)
		}
	}
	return resp.StatusCode, body, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"error":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)+1))
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}

// setForwardedFor appends the client's address of in to req's
// X-Forwarded-For, as a reverse proxy does.
func setForwardedFor(req, in *http.Request) {
	host, _, err := net.SplitHostPort(in.RemoteAddr)
	if err != nil {
		return
	}
	if prior := in.Header.Get("X-Forwarded-For"); prior != "" {
		host = prior + ", " + host
	}
	req.Header.Set("X-Forwarded-For", host)
}

// clientIP returns the original client of r: the first X-Forwarded-For
// entry, else the peer address.
func clientIP(r *http.Request) string {
	if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
		first, _, _ := strings.Cut(xff, ",")
		return strings.TrimSpace(first)
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	return host
}

func traceInfo(r *http.Request) map[string]string {
	trace, _ := parseTraceparent(r.Header.Get("traceparent"))
	return map[string]string{"trace_id": trace, "request_id": r.Header.Get("x-request-id")}
}

// ---- trace context (W3C traceparent) ----

func randomHex(n int) string {
	b := make([]byte, n)
	crand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// newTraceparent starts a new sampled trace.
func newTraceparent() string {
	return "00-" + randomHex(16) + "-" + randomHex(8) + "-01"
}

// parseTraceparent returns the trace id and flags of a version-00
// traceparent header.
func parseTraceparent(v string) (traceID string, ok bool) {
	parts := strings.Split(v, "-")
	if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		return "", false
	}
	return parts[1], true
}

// childTraceparent returns the traceparent for a call made while serving
// a request with parent: same trace, new span. A missing or invalid parent
// starts a new trace.
func childTraceparent(parent string) string {
	trace, ok := parseTraceparent(parent)
	if !ok {
		return newTraceparent()
	}
	return "00-" + trace + "-" + randomHex(8) + "-" + parent[len(parent)-2:]
}

// ---- demo JWT ----

// claims are the registered claims of the demo tokens.
type claims struct {
	Subject   string `json:"sub"`
	Issuer    string `json:"iss"`
	IssuedAt  int64  `json:"iat,omitempty"`
	ExpiresAt int64  `json:"exp"`
}

// demoToken returns an unsigned JWT (alg "none") for sub, as a demo
// identity provider would issue, valid for an hour from now.
func demoToken(sub string, now time.Time) string {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	payload, _ := json.Marshal(claims{Subject: sub, Issuer: "https://idp.demo.orbweaver.local", IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
	return header + "." + enc.EncodeToString(payload) + "."
}

// bearerClaims decodes (never verifies) the bearer JWT of r and checks its
// expiry against now.
func bearerClaims(r *http.Request, now time.Time) (claims, error) {
	var c claims
	auth := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		return c, errors.New("missing bearer token")
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, errors.New("malformed token")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return c, errors.New("malformed token payload")
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return c, errors.New("malformed token claims")
	}
	if c.Subject == "" {
		return c, errors.New("token has no subject")
	}
	if c.ExpiresAt != 0 && now.Unix() >= c.ExpiresAt {
		return c, errors.New("token expired")
	}
	return c, nil
}

// ---- request logging and counting ----

type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach Flush.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests counts each request served by s and logs it at debug level.
func logRequests(log *slog.Logger, s *service, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		s.served.Add(1)
		log.LogAttrs(r.Context(), slog.LevelDebug, "request",
			slog.String("service", s.name),
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", sw.status),
			slog.Int("bytes", sw.bytes),
			slog.Duration("duration", time.Since(start)),
			slog.String("remote", r.RemoteAddr),
			slog.String("request_id", r.Header.Get("x-request-id")),
		)
	})
}
