package demomesh

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startMesh starts a mesh on free ports and closes it when the test ends.
func startMesh(t *testing.T) *Mesh {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := Start(ctx, Config{Ports: []int{0, 0, 0, 0}, Logger: log})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

func TestMeshLayout(t *testing.T) {
	m := startMesh(t)
	svcs := m.Services()
	wantNames := []string{Frontend, Orders, Inventory, Payments}
	wantIPs := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
	ports := m.Ports()
	if len(svcs) != 4 || len(ports) != 4 {
		t.Fatalf("got %d services, %d ports, want 4", len(svcs), len(ports))
	}
	for i, s := range svcs {
		host, port, err := net.SplitHostPort(s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if s.Name != wantNames[i] || host != wantIPs[i] || port != strconv.Itoa(ports[i]) {
			t.Errorf("service %d = %+v (port %d), want %s on %s", i, s, ports[i], wantNames[i], wantIPs[i])
		}
	}
	want := "tcp and (port " + strconv.Itoa(ports[0]) + " or port " + strconv.Itoa(ports[1]) +
		" or port " + strconv.Itoa(ports[2]) + " or port " + strconv.Itoa(ports[3]) + ")"
	if got := m.BPFFilter(); got != want {
		t.Errorf("BPFFilter() = %q, want %q", got, want)
	}
}

func TestStartErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.4:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "port in use", cfg: Config{Ports: []int{0, 0, busyPort, 0}}, want: "listen inventory on 127.0.0.4:"},
		{name: "wrong port count", cfg: Config{Ports: []int{0, 0}}, want: "ports: "},
		{name: "port out of range", cfg: Config{Ports: []int{0, 70000, 0, 0}}, want: "ports[1]: "},
		{name: "base port out of range", cfg: Config{BasePort: 65534}, want: "base port: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Start(context.Background(), tc.cfg)
			if err == nil {
				m.Close(context.Background())
				t.Fatal("Start succeeded, want error")
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error %q does not start with %q", err, tc.want)
			}
		})
	}
}

func TestRunLoad(t *testing.T) {
	m := startMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	stats, err := m.RunLoad(ctx, 50)
	if err != nil {
		t.Fatalf("RunLoad: %v", err)
	}
	t.Logf("load: %+v, served: %v", stats, m.Served())

	if stats.Sent < 40 || stats.Sent > 55 {
		t.Errorf("Sent = %d in 1s at 50 rps, want about 50", stats.Sent)
	}
	if stats.Errors != 0 || stats.Skipped != 0 {
		t.Errorf("Errors = %d, Skipped = %d, want 0", stats.Errors, stats.Skipped)
	}
	var byStatus int64
	for _, n := range stats.ByStatus {
		byStatus += n
	}
	if stats.Completed != stats.Sent || byStatus != stats.Completed {
		t.Errorf("Completed = %d, sum by status = %d, want Sent = %d", stats.Completed, byStatus, stats.Sent)
	}
	for _, code := range []int{http.StatusOK, http.StatusNotFound} {
		if stats.ByStatus[code] == 0 {
			t.Errorf("no %d among %v", code, stats.ByStatus)
		}
	}
	for code := range stats.ByStatus {
		if code != http.StatusOK && code != http.StatusNotFound && code != http.StatusBadGateway {
			t.Errorf("unexpected status %d in %v", code, stats.ByStatus)
		}
	}
	served := m.Served()
	if served[Frontend] != stats.Sent {
		t.Errorf("frontend served %d, want %d", served[Frontend], stats.Sent)
	}
	for _, name := range []string{Orders, Inventory, Payments} {
		if served[name] == 0 {
			t.Errorf("%s served no request: %v", name, served)
		}
	}
	if served[Orders] >= served[Frontend] {
		t.Errorf("orders served %d >= frontend %d, want fewer (catalog stays on the frontend)", served[Orders], served[Frontend])
	}
}

func TestRunLoadBadRate(t *testing.T) {
	m := startMesh(t)
	if _, err := m.RunLoad(context.Background(), 0); err == nil || !strings.HasPrefix(err.Error(), "rps: ") {
		t.Errorf("RunLoad(0) = %v, want rps error", err)
	}
}

// clientFrom returns an HTTP client whose connections come from ip.
func clientFrom(t *testing.T, ip string) *http.Client {
	tr := newTransport(net.ParseIP(ip))
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func TestFrontendCalls(t *testing.T) {
	m := startMesh(t)
	c := clientFrom(t, "127.0.0.10")
	token := demoToken("carol", time.Now())
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"

	get := func(t *testing.T, path string, hdr map[string]string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, m.FrontendURL()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}

	t.Run("order propagates headers", func(t *testing.T) {
		// Order 4: not awaiting payment, SKU known.
		resp, body := get(t, "/api/orders/4", map[string]string{
			"Authorization": "Bearer " + token,
			"traceparent":   "00-" + traceID + "-00f067aa0ba902b7-01",
			"x-request-id":  "req-42",
		})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if got := resp.Header.Get("x-request-id"); got != "req-42" {
			t.Errorf("response x-request-id = %q, want req-42", got)
		}
		var out struct {
			User  string `json:"user"`
			Order struct {
				ClientIP string            `json:"client_ip"`
				Trace    map[string]string `json:"trace"`
				Item     struct {
					Trace map[string]string `json:"trace"`
				} `json:"item"`
			} `json:"order"`
		}
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
		if out.User != "carol" {
			t.Errorf("user = %q, want carol (JWT sub)", out.User)
		}
		if out.Order.ClientIP != "127.0.0.10" {
			t.Errorf("orders saw client %q, want 127.0.0.10 via X-Forwarded-For", out.Order.ClientIP)
		}
		for svc, tr := range map[string]map[string]string{"orders": out.Order.Trace, "inventory": out.Order.Item.Trace} {
			if tr["trace_id"] != traceID || tr["request_id"] != "req-42" {
				t.Errorf("%s saw trace %v, want trace_id %s and request_id req-42", svc, tr, traceID)
			}
		}
	})

	t.Run("order with payment", func(t *testing.T) {
		resp, body := get(t, "/api/orders/3", map[string]string{"Authorization": "Bearer " + token})
		// Payments fails 2% of the time, which the frontend reports as 502.
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if resp.StatusCode == http.StatusOK && !strings.Contains(string(body), `"status":"captured"`) {
			t.Errorf("no captured payment in %s", body)
		}
		if resp.Header.Get("x-request-id") == "" {
			t.Error("frontend did not generate an x-request-id")
		}
	})

	tests := []struct {
		name, path string
		hdr        map[string]string
		want       int
	}{
		{name: "unknown order", path: "/api/orders/123456", hdr: map[string]string{"Authorization": "Bearer " + token}, want: http.StatusNotFound},
		{name: "non-numeric order", path: "/api/orders/abc", hdr: map[string]string{"Authorization": "Bearer " + token}, want: http.StatusNotFound},
		{name: "discontinued sku still answers", path: "/api/orders/13", hdr: map[string]string{"Authorization": "Bearer " + token}, want: http.StatusOK},
		{name: "no token", path: "/api/orders/4", want: http.StatusUnauthorized},
		{name: "expired token", path: "/api/orders/4", hdr: map[string]string{"Authorization": "Bearer " + demoToken("carol", time.Now().Add(-2*time.Hour))}, want: http.StatusUnauthorized},
		{name: "unknown path", path: "/api/nope", want: http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, tc.path, tc.hdr)
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.want, body)
			}
		})
	}

	t.Run("catalog is chunked", func(t *testing.T) {
		resp, body := get(t, "/api/catalog", nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if !slices.Contains(resp.TransferEncoding, "chunked") || resp.ContentLength != -1 {
			t.Errorf("TransferEncoding %v, ContentLength %d, want chunked", resp.TransferEncoding, resp.ContentLength)
		}
		var items []map[string]any
		if err := json.Unmarshal(body, &items); err != nil || len(items) != 8 {
			t.Errorf("catalog = %d items (%v): %s", len(items), err, body)
		}
	})
}

func TestTraceparent(t *testing.T) {
	valid := regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`)
	parent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tests := []struct {
		name, parent string
		sameTrace    bool
	}{
		{name: "child keeps trace", parent: parent, sameTrace: true},
		{name: "missing starts trace", parent: ""},
		{name: "invalid starts trace", parent: "01-xyz"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := childTraceparent(tc.parent)
			if !valid.MatchString(got) {
				t.Fatalf("childTraceparent(%q) = %q, not a traceparent", tc.parent, got)
			}
			if same := got[3:35] == parent[3:35]; same != tc.sameTrace {
				t.Errorf("childTraceparent(%q) = %q, same trace = %v, want %v", tc.parent, got, same, tc.sameTrace)
			}
			if got == tc.parent {
				t.Error("child span id equals parent's")
			}
		})
	}
}
