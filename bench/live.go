package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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

	// step counts the responses fully written for the current live step.
	step atomic.Pointer[stepCount]

	mu      sync.Mutex
	written map[string]time.Time // e2e request id → when the handler wrote the response
	// pollTimes are the durations of the e2e poller's queries (guarded by mu).
	pollTimes []time.Duration
}

// stepCount counts the responses the rig's server wrote to the socket for
// request ids starting with prefix, and when it wrote the last one.
type stepCount struct {
	prefix string
	n      atomic.Int64
	last   atomic.Int64 // unix nanoseconds
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
	if _, err := io.WriteString(w, liveBody); err != nil {
		return
	}
	// Flush to learn whether the response reached the socket: only those
	// count as requests made.
	if err := http.NewResponseController(w).Flush(); err != nil {
		return
	}
	if st := rg.step.Load(); st != nil && strings.HasPrefix(id, st.prefix) {
		st.n.Add(1)
		st.last.Store(time.Now().UnixNano())
	}
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

// benchLive is section 2: for each rate, requests are made to the rig's
// server for LiveStep (by wrk when installed, else by the in-process Go
// client) and the calls stored with the step's request-id prefix are
// compared with the responses the server fully wrote.
func benchLive(ctx context.Context, e *env, rep *report) error {
	const sec = "2 live"
	rg, err := e.rig(ctx)
	if err != nil {
		return err
	}
	gen, err := newLoadGen(e)
	if err != nil {
		return err
	}
	s := e.cfg.sizes
	pid := rg.agent.Process.Pid
	type perRate struct {
		made, stored, pct, achieved, drops, queueDrops, cpu, rss []float64
	}
	res := make([]perRate, len(s.LiveRates))
	for run := range e.cfg.runs {
		for i, rate := range s.LiveRates {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			prefix := fmt.Sprintf("live-%d-%d-%d-", rate, run, time.Now().UnixNano())
			st := &stepCount{prefix: prefix}
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
			self0, _ := procCPU(os.Getpid())
			busy0, total0 := machineCPU()
			rg.step.Store(st)
			start := time.Now()
			detail, loadErr := gen.run(ctx, rg, rate, s.LiveStep, prefix, st)
			self1, _ := procCPU(os.Getpid())
			busy1, total1 := machineCPU()
			c1, err := procCPU(pid)
			close(stopSample)
			<-sampled
			if loadErr != nil {
				return loadErr
			}
			if err != nil {
				return err
			}
			// Wait for the calls to arrive: until all are stored, or
			// the count stops moving for 3 s (30 s at most). st stays
			// current until the next step, so that a response written
			// after the generator stopped still counts as made.
			var stored int64
			last, lastChange := int64(-1), time.Now()
			for wait := time.Now(); time.Since(wait) < 30*time.Second; time.Sleep(250 * time.Millisecond) {
				if stored, err = rg.count(ctx, prefix, since); err != nil {
					return err
				}
				if stored >= st.n.Load() {
					break
				}
				if stored != last {
					last, lastChange = stored, time.Now()
				} else if time.Since(lastChange) > 3*time.Second {
					break
				}
			}
			m1, err := rg.scrape()
			if err != nil {
				return err
			}
			made := st.n.Load()
			took := s.LiveStep
			if made > 0 {
				took = time.Unix(0, st.last.Load()).Sub(start)
			}
			r := &res[i]
			r.made = append(r.made, float64(made))
			r.stored = append(r.stored, float64(stored))
			r.pct = append(r.pct, 100*float64(stored)/float64(max(made, 1)))
			r.achieved = append(r.achieved, float64(made)/took.Seconds())
			r.drops = append(r.drops, m1["orbweaver_agent_kernel_drops_total"]-m0["orbweaver_agent_kernel_drops_total"])
			r.queueDrops = append(r.queueDrops, m1["orbweaver_agent_queue_drops_total"]-m0["orbweaver_agent_queue_drops_total"])
			r.cpu = append(r.cpu, 100*(c1-c0).Seconds()/took.Seconds())
			r.rss = append(r.rss, float64(maxRSS)/1024)
			e.logf("live run %d rate %d: made %d in %s (%.0f/s), stored %d (%.3f%%), kernel drops %.0f, agent CPU %.0f%%, RSS %.0f MiB; %s; "+
				"machine CPU %.0f%% busy of %d cores, bench process (server, controller, in-process client if used) %.0f%% of a core",
				run+1, rate, made, took.Round(time.Millisecond), float64(made)/took.Seconds(), stored, r.pct[len(r.pct)-1],
				r.drops[len(r.drops)-1], r.cpu[len(r.cpu)-1], r.rss[len(r.rss)-1], detail,
				100*float64(busy1-busy0)/float64(max(total1-total0, 1)), runtime.NumCPU(), 100*(self1-self0).Seconds()/time.Since(start).Seconds())
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
		rep.add(sec, name+"calls stored / requests made", "%", r.pct, t,
			fmt.Sprintf("%.0f made, %.0f stored (made: responses the server wrote; medians)", median(r.made), median(r.stored)))
		rep.add(sec, name+"achieved rate", "req/s", r.achieved, nil, gen.describe(rate))
		rep.add(sec, name+"kernel drops", "packets", r.drops, nil, "")
		rep.add(sec, name+"agent upload-queue drops", "calls", r.queueDrops, nil, "")
		rep.add(sec, name+"agent CPU", "% of a core", r.cpu, nil, "subprocess, /proc/PID/stat during the load")
		rep.add(sec, name+"agent RSS (max sampled)", "MiB", r.rss, nil, "")
		reached := median(r.achieved) >= 0.95*float64(rate)
		if reached && median(r.pct) == 100 && full == i {
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
	rep.add(sec, "100% stored up to (nominal rate)", "req/s", []float64{stated}, t,
		"highest rate reached (≥ 95% of nominal) with every call stored (median of runs), all lower rates too")
	return nil
}

// machineCPU returns the busy and total jiffies of all CPUs (/proc/stat),
// zero when unreadable.
func machineCPU() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// loadGen makes the requests of a live step: wrk when it is installed (a
// separate process, paced by wrkScript), else the in-process Go client.
type loadGen struct {
	wrk    string // wrk binary; "" for the Go client
	script string // wrkScript written to the work directory
}

func newLoadGen(e *env) (*loadGen, error) {
	bin, err := exec.LookPath("wrk")
	if err != nil {
		e.logf("live: wrk not found (install it with apt-get install wrk, or make setup): using the in-process Go client, which reaches about 16k req/s on 2 cores")
		return &loadGen{}, nil
	}
	script := filepath.Join(e.workDir, "live-wrk.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		return nil, fmt.Errorf("write wrk script: %w", err)
	}
	return &loadGen{wrk: bin, script: script}, nil
}

// wrkConns is the number of connections wrk keeps for rate: each carries
// one request at a time, so they bound the rate at about conns/latency.
func wrkConns(rate int) int { return min(max(rate/150, 8), 256) }

func (g *loadGen) describe(rate int) string {
	if g.wrk == "" {
		return "in-process Go client (wrk not installed); server, client and agent share the CPUs"
	}
	return fmt.Sprintf("wrk, 1 thread, %d connections, paced; server, wrk and agent share the CPUs", wrkConns(rate))
}

// run makes about rate×d requests with ids prefix+N and returns once they
// are answered, with a description of what the generator saw for the log.
func (g *loadGen) run(ctx context.Context, rg *liveRig, rate int, d time.Duration, prefix string, st *stepCount) (string, error) {
	if g.wrk == "" {
		ok, _ := rg.load(ctx, rate, d, prefix)
		return fmt.Sprintf("Go client: %d answered", ok), nil
	}
	total := int64(float64(rate) * d.Seconds())
	// wrk stops sending 2 s after d (if it fell behind) and the bench
	// stops it 1 s later, or as soon as every request is answered.
	sendFor, stopAfter := d+2*time.Second, d+3*time.Second
	cmd := exec.CommandContext(ctx, g.wrk, "-t1", "-c", strconv.Itoa(wrkConns(rate)),
		"-d", fmt.Sprintf("%ds", int((stopAfter+30*time.Second).Seconds())), "--timeout", "5s",
		"-s", g.script, "http://"+rg.srvAddr+"/api/v1/items/42?view=full")
	cmd.Env = append(os.Environ(),
		"ORBWEAVER_PREFIX="+prefix,
		"ORBWEAVER_RATE="+strconv.Itoa(rate),
		"ORBWEAVER_TOTAL="+strconv.FormatInt(total, 10),
		"ORBWEAVER_STOP_MS="+strconv.FormatInt(sendFor.Milliseconds(), 10))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start wrk: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
wait:
	for st.n.Load() < total && time.Since(start) < stopAfter {
		select {
		case err := <-exited:
			return "", fmt.Errorf("wrk exited early: %v: %s", err, strings.TrimSpace(out.String()))
		case <-t.C:
		case <-ctx.Done():
			break wait
		}
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		if err != nil {
			return "", fmt.Errorf("wrk: %v: %s", err, strings.TrimSpace(out.String()))
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return "", fmt.Errorf("wrk did not stop on SIGINT: %s", strings.TrimSpace(out.String()))
	}
	summary := "no summary"
	for _, line := range strings.Split(out.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "orbweaver-wrk "); ok {
			summary = rest
		}
	}
	var cpu time.Duration
	if ps := cmd.ProcessState; ps != nil {
		cpu = ps.UserTime() + ps.SystemTime()
	}
	return fmt.Sprintf("wrk (%d connections, CPU %s): %s", wrkConns(rate), cpu.Round(time.Millisecond), summary), nil
}

// wrkScript is the wrk script of the live section. Each request gets a
// unique X-Request-Id; delay() paces them at ORBWEAVER_RATE per second from
// the first (a request that falls behind its slot leaves at once), sends
// ORBWEAVER_TOTAL at most and none after ORBWEAVER_STOP_MS, so that every
// request sent is answered before the bench stops wrk. One thread (-t1).
const wrkScript = `local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } orbweaver_timespec;
int clock_gettime(int clock, orbweaver_timespec *tp);
]]
local tp = ffi.new("orbweaver_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, tp) -- CLOCK_MONOTONIC
  return tonumber(tp.tv_sec) * 1000 + tonumber(tp.tv_nsec) / 1e6
end

local prefix = os.getenv("ORBWEAVER_PREFIX")
local interval = 1000 / tonumber(os.getenv("ORBWEAVER_RATE"))
local total = tonumber(os.getenv("ORBWEAVER_TOTAL"))
local stop_ms = tonumber(os.getenv("ORBWEAVER_STOP_MS"))
local start, scheduled, sent = nil, 0, 0

function delay()
  local now = now_ms()
  if start == nil then start = now end
  if scheduled >= total or now - start >= stop_ms then
    return 3600000 -- no more requests on this connection
  end
  local due = start + scheduled * interval
  scheduled = scheduled + 1
  if due <= now then return 0 end
  return math.floor(due - now)
end

function request()
  sent = sent + 1
  return wrk.format(nil, nil, { ["X-Request-Id"] = prefix .. sent })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("orbweaver-wrk requests=%d errors connect=%d read=%d write=%d status=%d timeout=%d latency p99=%.1fms\n",
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(99) / 1000))
end
`
