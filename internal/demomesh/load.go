package demomesh

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"
)

// LoadStats counts what RunLoad did. Sent = Completed + Errors.
type LoadStats struct {
	// Sent is the number of requests started.
	Sent int64
	// Completed is the number of responses received, whatever their status.
	Completed int64
	// Errors is the number of requests that got no response.
	Errors int64
	// Skipped is the number of requests not sent because too many were
	// already in flight.
	Skipped int64
	// ByStatus counts completed requests by HTTP status code.
	ByStatus map[int]int64
}

// maxInFlight bounds the requests RunLoad has outstanding; beyond it,
// requests are skipped and counted.
const maxInFlight = 256

// loadClient is one simulated client: its own source IP, keep-alive
// connections and identity.
type loadClient struct {
	http      *http.Client
	transport *http.Transport
	token     string
	userAgent string
	requestID bool // whether it sends x-request-id
}

func newLoadClients(now time.Time) []*loadClient {
	specs := []struct {
		ip, user, agent string
		requestID       bool
	}{
		{"127.0.0.10", "alice", "Mozilla/5.0 (X11; Linux x86_64) orbweaver-demo-web/1.0", true},
		{"127.0.0.11", "bob", "orbweaver-demo-mobile/2.3 (Android 14)", true},
		{"127.0.0.12", "svc-reporting", "orbweaver-demo-batch/0.9", false},
	}
	clients := make([]*loadClient, len(specs))
	for i, s := range specs {
		t := newTransport(net.ParseIP(s.ip))
		clients[i] = &loadClient{
			http:      &http.Client{Transport: t},
			transport: t,
			token:     demoToken(s.user, now),
			userAgent: s.agent,
			requestID: s.requestID,
		}
	}
	return clients
}

// RunLoad sends requests to the frontend at about rps requests per second
// until ctx is done, then waits for the requests in flight and returns the
// counts. Requests come from three clients on 127.0.0.10-12, each with
// keep-alive connections and a bearer token of its own, and mix order
// lookups (about one in ten for an unknown order, answered 404) with
// streamed catalog reads. RunLoad may run concurrently with itself.
func (m *Mesh) RunLoad(ctx context.Context, rps int) (LoadStats, error) {
	if rps <= 0 {
		return LoadStats{}, fmt.Errorf("rps: must be positive, got %d", rps)
	}
	clients := newLoadClients(time.Now())
	defer func() {
		for _, c := range clients {
			c.transport.CloseIdleConnections()
		}
	}()

	var (
		mu    sync.Mutex
		stats = LoadStats{ByStatus: make(map[int]int64)}
		wg    sync.WaitGroup
		sem   = make(chan struct{}, maxInFlight)
	)
	base := m.FrontendURL()
	send := func(seq int64) {
		defer wg.Done()
		defer func() { <-sem }()
		// Let requests in flight finish when ctx ends, so counts add up.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		status, err := clients[seq%int64(len(clients))].do(rctx, base, seq)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			stats.Errors++
			m.log.Debug("load request failed", "err", err)
			return
		}
		stats.Completed++
		stats.ByStatus[status]++
	}

	interval := max(time.Second/time.Duration(rps), time.Millisecond)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	start := time.Now()
	var seq int64
	for {
		// Requests due by now: one at start, then rps per second.
		due := int64(time.Since(start)*time.Duration(rps)/time.Second) + 1
		for ; seq < due; seq++ {
			select {
			case sem <- struct{}{}:
				mu.Lock()
				stats.Sent++
				mu.Unlock()
				wg.Add(1)
				go send(seq)
			default:
				mu.Lock()
				stats.Skipped++
				mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			return stats, nil
		case <-ticker.C:
		}
	}
}

// do sends request number seq and drains the response.
func (c *loadClient) do(ctx context.Context, base string, seq int64) (int, error) {
	var path string
	switch {
	case seq%20 == 7:
		path = "/api/catalog"
	case seq%10 == 3:
		path = fmt.Sprintf("/api/orders/%d", knownOrders+1+rand.IntN(9000)) // unknown: 404
	default:
		path = fmt.Sprintf("/api/orders/%d", 1+rand.IntN(knownOrders))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("traceparent", newTraceparent())
	if c.requestID {
		req.Header.Set("x-request-id", randomHex(16))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, fmt.Errorf("read %s response: %w", path, err)
	}
	return resp.StatusCode, nil
}
