package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orbweaver/orbweaver/controller"
	"github.com/orbweaver/orbweaver/internal/pgcluster"
)

// env holds what several sections share, started on first use: a work
// directory, a private Postgres cluster, a controller and the agent binary.
// It is used from one goroutine.
type env struct {
	cfg     config
	log     io.Writer
	workDir string

	cluster  *pgcluster.Cluster
	ctrlAddr string
	ctrlStop func()
	pool     *pgxpool.Pool
	agentBin string
	live     *liveRig
}

func newEnv(cfg config, logw io.Writer) (*env, error) {
	// Postgres runs as the postgres user: the directory must be traversable.
	dir, err := os.MkdirTemp("/tmp", "orbweaver-bench-")
	if err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	return &env{cfg: cfg, log: logw, workDir: dir}, nil
}

func (e *env) logf(format string, a ...any) {
	fmt.Fprintf(e.log, "%s bench: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

func (e *env) now() time.Time                  { return time.Now() }
func (e *env) since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// benchPostgresSettings replace two of internal/pgcluster's defaults for
// tests, as a database server on a host like this one would have them:
//   - shared_buffers 1 GB instead of 128 MB (Postgres suggests a quarter of
//     the memory; the host has 24 GB). This VM reclaims idle page cache
//     proactively (kdamond), so data Postgres does not hold itself is read
//     from disk again: the hour of calls a query scans (~150 MB) fits;
//   - no parallel query workers: Postgres, the controller and the bench
//     share two cores, and with workers a heap scan's latency was higher
//     and less steady (path prefix query, 21 runs: p50 222 ms, p95 304 with
//     two workers; 157 / 216 with one; 147 / 151 with none).
var benchPostgresSettings = map[string]string{
	"shared_buffers":                  "1GB",
	"max_parallel_workers_per_gather": "0",
}

// database starts the shared Postgres cluster on first use.
func (e *env) database(ctx context.Context) (*pgcluster.Cluster, error) {
	if e.cluster != nil {
		return e.cluster, nil
	}
	e.logf("starting PostgreSQL in %s (%v)", filepath.Join(e.workDir, "pg"), benchPostgresSettings)
	c, err := pgcluster.Start(ctx, pgcluster.Options{DataDir: filepath.Join(e.workDir, "pg"), Settings: benchPostgresSettings})
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	e.cluster = c
	return c, nil
}

// controller starts an in-process controller (authentication off) on the
// shared cluster on first use and returns its gRPC address and a pool on
// its database.
func (e *env) controller(ctx context.Context) (string, *pgxpool.Pool, error) {
	if e.ctrlAddr != "" {
		return e.ctrlAddr, e.pool, nil
	}
	c, err := e.database(ctx)
	if err != nil {
		return "", nil, err
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- controller.Run(cctx, controller.Config{
			Listen:      "127.0.0.1:0",
			DatabaseURL: c.URL(),
			Logger:      slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelError})),
			OnReady:     func(a net.Addr) { ready <- a },
		})
	}()
	select {
	case a := <-ready:
		e.ctrlAddr = a.String()
	case err := <-done:
		cancel()
		return "", nil, fmt.Errorf("controller: %w", err)
	case <-time.After(60 * time.Second):
		cancel()
		return "", nil, fmt.Errorf("controller did not start within 60 s")
	}
	e.ctrlStop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
		}
	}
	pool, err := pgxpool.New(ctx, c.URL())
	if err != nil {
		return "", nil, fmt.Errorf("connect: %w", err)
	}
	e.pool = pool
	return e.ctrlAddr, e.pool, nil
}

// agentBinary builds orbweaver-agent into the work directory on first use.
func (e *env) agentBinary(ctx context.Context) (string, error) {
	if e.agentBin != "" {
		return e.agentBin, nil
	}
	out := filepath.Join(e.workDir, "orbweaver-agent")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./agent/cmd/orbweaver-agent")
	cmd.Dir = moduleRoot()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build agent: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	e.agentBin = out
	return out, nil
}

func (e *env) close() {
	if e.live != nil {
		e.live.stop()
	}
	if e.pool != nil {
		e.pool.Close()
	}
	if e.ctrlStop != nil {
		e.ctrlStop()
	}
	if e.cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := e.cluster.Stop(ctx); err != nil {
			e.logf("stop postgres: %v", err)
		}
		cancel()
	}
	if e.cfg.keep {
		e.logf("work directory kept: %s", e.workDir)
		return
	}
	if err := os.RemoveAll(e.workDir); err != nil {
		e.logf("remove work dir: %v", err)
	}
}

// moduleRoot is the directory holding go.mod, found from the working
// directory upwards ("." when not found).
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return "."
		}
	}
}

// resetPeakRSS returns freed heap to the OS and resets this process's peak
// RSS (VmHWM) so that a later peakRSS measures what follows. It reports
// whether the kernel accepted the reset.
func resetPeakRSS() bool {
	runtime.GC()
	debug.FreeOSMemory()
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// procStatusKiB reads a "Vm..." line of /proc/PID/status in KiB ("self"
// for this process).
func procStatusKiB(pid, field string) (int64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, fmt.Errorf("read status: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse %s: %w", field, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s not in /proc/%s/status", field, pid)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times (100 on every
// Linux architecture Go supports).
const clockTicks = 100

// procCPU returns the user+system CPU time of a process.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read stat: %w", err)
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat times", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}
