package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// liveRig is an HTTP server on loopback captured by a real agent (a
// subprocess, for honest CPU and RSS) shipping to the in-process controller.
type liveRig struct {
	srv       *http.Server
	srvAddr   string
	port      int
	agent     *exec.Cmd
	agentDone chan error
	metrics   string // agent's /metrics URL
	pool      *pgxpool.Pool
	client    *http.Client

	mu      sync.Mutex
	written map[string]time.Time // e2e request id → when the handler wrote the response
}

// liveBody is the response body of every request.
const liveBody = `{"id":42,"name":"widget","tags":["a","b","c"],"price":12.5,"stock":1000,"updated":"2026-01-15T12:00:00Z"}`

// rig starts the live rig on first use.
func (e *env) rig(ctx context.Context) (*liveRig, error) {
	if e.live != nil {
		return e.live, nil
	}
	addr, pool, err := e.controller(ctx)
	if err != nil {
		return nil, err
	}
	bin, err := e.agentBinary(ctx)
	if err != nil {
		return nil, err
	}
	rg := &liveRig{pool: pool, written: make(map[string]time.Time)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	rg.srvAddr = ln.Addr().String()
	rg.port = ln.Addr().(*net.TCPAddr).Port
	rg.srv = &http.Server{Handler: http.HandlerFunc(rg.handle), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = rg.srv.Serve(ln) }()
	rg.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512, DisableCompression: true}, Timeout: 10 * time.Second}

	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	maddr := mln.Addr().String()
	mln.Close()
	rg.metrics = "http://" + maddr + "/metrics"
	logf, err := os.Create(filepath.Join(e.workDir, "agent.log"))
	if err != nil {
		return nil, fmt.Errorf("agent log: %w", err)
	}
	rg.agent = exec.Command(bin, "--controller", addr, "--name", "bench-live", "--interface", "lo",
		"--filter", fmt.Sprintf("tcp port %d", rg.port), "--state-dir", filepath.Join(e.workDir, "agent-state"),
		"--metrics-listen", maddr, "--log-level", "warn")
	rg.agent.Stdout, rg.agent.Stderr = logf, logf
	if err := rg.agent.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start agent: %w", err)
	}
	rg.agentDone = make(chan error, 1)
	go func() { rg.agentDone <- rg.agent.Wait(); logf.Close() }()
	e.live = rg
	// Wait until the agent captures, then until a probe request is stored.
	deadline := time.Now().Add(60 * time.Second)
	for {
		m, err := rg.scrape()
		if err == nil && m["orbweaver_agent_capturing"] == 1 && m["orbweaver_agent_connected"] == 1 {
			break
		}
		select {
		case err := <-rg.agentDone:
			return nil, fmt.Errorf("agent exited: %v (see %s)", err, filepath.Join(e.workDir, "agent.log"))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, errors.New("agent did not start capturing within 60 s")
		}
	}
	probe := fmt.Sprintf("probe-%d", time.Now().UnixNano())
	for time.Now().Before(deadline) {
		if err := rg.get(ctx, probe); err != nil {
			return nil, err
		}
		n, err := rg.count(ctx, probe, time.Now().Add(-time.Minute))
		if err != nil {
			return nil, err
		}
		if n > 0 {
			return rg, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil, errors.New("probe request not stored within 60 s")
}

func (rg *liveRig) stop() {
	_ = rg.srv.Close()
	if rg.agent.Process != nil {
		_ = rg.agent.Process.Signal(os.Interrupt)
		select {
		case <-rg.agentDone:
		case <-time.After(10 * time.Second):
			_ = rg.agent.Process.Kill()
			<-rg.agentDone
		}
	}
}

func (rg *liveRig) handle(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	id := r.Header.Get("X-Request-Id")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(liveBody)))
	if strings.HasPrefix(id, "e2e-") {
		now := time.Now()
		rg.mu.Lock()
		rg.written[id] = now
		rg.mu.Unlock()
	}
	_, _ = io.WriteString(w, liveBody)
}

func (rg *liveRig) get(ctx context.Context, id string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+rg.srvAddr+"/api/v1/items/42?view=full", nil)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	req.Header.Set("X-Request-Id", id)
	resp, err := rg.client.Do(req)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return nil
}

// load sends requests with ids prefix+N at rate req/s for d and returns
// the requests answered and the actual duration.
func (rg *liveRig) load(ctx context.Context, rate int, d time.Duration, prefix string) (int64, time.Duration) {
	workers := min(max(rate/40, 4), 512)
	tokens := make(chan int64, workers*2)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range tokens {
				if rg.get(ctx, prefix+strconv.FormatInt(n, 10)) == nil {
					ok.Add(1)
				}
			}
		}()
	}
	start := time.Now()
	var issued int64
	total := int64(float64(rate) * d.Seconds())
	t := time.NewTicker(time.Millisecond)
	for issued < total && ctx.Err() == nil {
		<-t.C
		due := min(int64(float64(rate)*time.Since(start).Seconds()), total)
		for ; issued < due; issued++ {
			tokens <- issued
		}
	}
	t.Stop()
	close(tokens)
	wg.Wait()
	return ok.Load(), time.Since(start)
}

// count returns the stored calls whose request id starts with prefix.
func (rg *liveRig) count(ctx context.Context, prefix string, since time.Time) (int64, error) {
	var n int64
	err := rg.pool.QueryRow(ctx, `SELECT count(*) FROM http_calls WHERE time >= $1 AND x_request_id LIKE $2`,
		since, prefix+"%").Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count calls: %w", err)
	}
	return n, nil
}

// scrape reads the agent's metrics, summing the series of each name.
func (rg *liveRig) scrape() (map[string]float64, error) {
	resp, err := http.Get(rg.metrics)
	if err != nil {
		return nil, fmt.Errorf("scrape agent: %w", err)
	}
	defer resp.Body.Close()
	m := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		if i := strings.LastIndexByte(line, ' '); i >= 0 {
			rest = line[i+1:]
		}
		v, err := strconv.ParseFloat(rest, 64)
		if err == nil {
			m[name] += v
		}
	}
	return m, sc.Err()
}

// benchLive is section 2.
func benchLive(ctx context.Context, e *env, rep *report) error {
	const sec = "2 live"
	rg, err := e.rig(ctx)
	if err != nil {
		return err
	}
	s := e.cfg.sizes
	pid := rg.agent.Process.Pid
	type perRate struct{ achieved, delivered, drops, queueDrops, cpu, rss []float64 }
	res := make([]perRate, len(s.LiveRates))
	for run := range e.cfg.runs {
		for i, rate := range s.LiveRates {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			prefix := fmt.Sprintf("live-%d-%d-%d-", rate, run, time.Now().UnixNano())
			m0, err := rg.scrape()
			if err != nil {
				return err
			}
			c0, err := procCPU(pid)
			if err != nil {
				return err
			}
			since := time.Now().Add(-time.Second)
			var maxRSS int64
			stopSample := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				t := time.NewTicker(100 * time.Millisecond)
				defer t.Stop()
				for {
					if v, err := procStatusKiB(strconv.Itoa(pid), "VmRSS"); err == nil && v > maxRSS {
						maxRSS = v
					}
					select {
					case <-stopSample:
						return
					case <-t.C:
					}
				}
			}()
			made, took := rg.load(ctx, rate, s.LiveStep, prefix)
			c1, err := procCPU(pid)
			close(stopSample)
			<-sampled
			if err != nil {
				return err
			}
			// Wait for the calls to arrive: until all are stored, or
			// the count stops moving for 3 s (30 s at most).
			var delivered int64
			last, lastChange := int64(-1), time.Now()
			for wait := time.Now(); time.Since(wait) < 30*time.Second; time.Sleep(250 * time.Millisecond) {
				if delivered, err = rg.count(ctx, prefix, since); err != nil {
					return err
				}
				if delivered >= made {
					break
				}
				if delivered != last {
					last, lastChange = delivered, time.Now()
				} else if time.Since(lastChange) > 3*time.Second {
					break
				}
			}
			m1, err := rg.scrape()
			if err != nil {
				return err
			}
			r := &res[i]
			r.achieved = append(r.achieved, float64(made)/took.Seconds())
			r.delivered = append(r.delivered, 100*float64(delivered)/float64(max(made, 1)))
			r.drops = append(r.drops, m1["orbweaver_agent_kernel_drops_total"]-m0["orbweaver_agent_kernel_drops_total"])
			r.queueDrops = append(r.queueDrops, m1["orbweaver_agent_queue_drops_total"]-m0["orbweaver_agent_queue_drops_total"])
			r.cpu = append(r.cpu, 100*(c1-c0).Seconds()/took.Seconds())
			r.rss = append(r.rss, float64(maxRSS)/1024)
			e.logf("live run %d rate %d: made %d in %s (%.0f/s), delivered %d, kernel drops %.0f, agent CPU %.0f%%, RSS %.0f MiB",
				run+1, rate, made, took.Round(time.Millisecond), float64(made)/took.Seconds(), delivered,
				r.drops[len(r.drops)-1], r.cpu[len(r.cpu)-1], r.rss[len(r.rss)-1])
		}
	}
	full := 0
	for i, rate := range s.LiveRates {
		r := res[i]
		name := fmt.Sprintf("@%d req/s: ", rate)
		var t *target
		if rate >= 20000 {
			t = atLeast(100)
		}
		rep.add(sec, name+"calls delivered / requests made", "%", r.delivered, t, fmt.Sprintf("achieved %s req/s (in-process Go client, server and agent share the CPUs)", fmtNum(median(r.achieved))))
		rep.add(sec, name+"kernel drops", "packets", r.drops, nil, "")
		rep.add(sec, name+"agent upload-queue drops", "calls", r.queueDrops, nil, "")
		rep.add(sec, name+"agent CPU", "% of a core", r.cpu, nil, "subprocess, /proc/PID/stat during the load")
		rep.add(sec, name+"agent RSS (max sampled)", "MiB", r.rss, nil, "")
		if median(r.delivered) >= 100 && full == i {
			full = i + 1
		}
	}
	stated := 0.0
	if full > 0 {
		stated = float64(s.LiveRates[full-1])
	}
	var t *target
	if slices.Max(s.LiveRates) >= 20000 {
		t = atLeast(20000)
	}
	rep.add(sec, "100% delivered up to (nominal rate)", "req/s", []float64{stated}, t, "highest rate with every call delivered (median of runs), all lower rates too")
	return nil
}
