package pgcluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orbweaver/orbweaver/internal/pgcluster"
)

// baseDir returns a fresh directory that the postgres system user can
// traverse (t.TempDir's parents are 0700 when running as root).
func baseDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgcluster-test-*")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// start starts a cluster, skipping the test when the binaries are missing
// (failing instead when CI=true).
func start(t *testing.T, opts pgcluster.Options) *pgcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pgcluster.Start(ctx, opts)
	if errors.Is(err, pgcluster.ErrBinariesNotFound) && os.Getenv("CI") != "true" {
		t.Skipf("PostgreSQL not installed: %v", err)
	}
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return c
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func queryString(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func password(t *testing.T, c *pgcluster.Cluster) string {
	t.Helper()
	u, err := url.Parse(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	return pw
}

func TestStartSettings(t *testing.T) {
	dataDir := filepath.Join(baseDir(t), "nested", "data")
	c := start(t, pgcluster.Options{DataDir: dataDir})
	conn := connect(t, c.URL())

	u, err := url.Parse(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "postgres" || u.Hostname() != "127.0.0.1" || u.Path != "/orbweaver" ||
		u.RawQuery != "sslmode=disable" || u.User.Username() != "orbweaver" {
		t.Errorf("URL() = %s", c.URL())
	}
	if got, want := c.URLFor("other"), strings.Replace(c.URL(), "/orbweaver?", "/other?", 1); got != want {
		t.Errorf("URLFor(other) = %s, want %s", got, want)
	}

	tests := []struct {
		sql  string
		want string
	}{
		{"SELECT current_database()", "orbweaver"},
		{"SELECT current_user", "orbweaver"},
		{"SELECT host(inet_server_addr())", "127.0.0.1"},
		{"SELECT inet_server_port()::text", u.Port()},
		{"SELECT current_setting('listen_addresses')", "127.0.0.1"},
		{"SELECT current_setting('unix_socket_directories')", dataDir},
		{"SELECT current_setting('max_connections')", "100"},
		{"SELECT current_setting('fsync')", "on"},
		{"SELECT current_setting('shared_buffers')", "128MB"},
		{"SELECT current_setting('password_encryption')", "scram-sha-256"},
		{"SELECT current_setting('server_encoding')", "UTF8"},
		{"SELECT (rolpassword LIKE 'SCRAM-SHA-256$%')::text FROM pg_authid WHERE rolname = 'orbweaver'", "true"},
		{"SELECT string_agg(DISTINCT auth_method, ',') FROM pg_hba_file_rules", "scram-sha-256"},
	}
	for _, tt := range tests {
		if got := queryString(t, conn, tt.sql); got != tt.want {
			t.Errorf("%s = %q, want %q", tt.sql, got, tt.want)
		}
	}

	pwPath := filepath.Join(dataDir, pgcluster.PasswordFile)
	fi, err := os.Stat(pwPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %v, want 0600", pwPath, fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(pwPath)
	if got := strings.TrimSpace(string(raw)); got != password(t, c) || len(got) != 48 {
		t.Errorf("password file holds %q, URL password %q", got, password(t, c))
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postgresql.log")); err != nil {
		t.Errorf("server log: %v", err)
	}
	if os.Geteuid() == 0 {
		st := fi.Sys().(*syscall.Stat_t)
		dst, _ := os.Stat(dataDir)
		if ds := dst.Sys().(*syscall.Stat_t); ds.Uid != st.Uid || queryString(t, conn, "SELECT pg_backend_pid()::text") == "" {
			t.Errorf("data dir uid %d, password file uid %d", ds.Uid, st.Uid)
		}
		// The server runs as the postgres system user.
		pid := serverPID(t, dataDir)
		ps, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
		if err != nil {
			t.Fatal(err)
		}
		if uid := ps.Sys().(*syscall.Stat_t).Uid; uid != dst.Sys().(*syscall.Stat_t).Uid || uid == 0 {
			t.Errorf("server uid = %d, data dir uid = %d", uid, dst.Sys().(*syscall.Stat_t).Uid)
		}
	}

	// Password authentication is enforced.
	bad := strings.Replace(c.URL(), password(t, c), "wrong", 1)
	_, err = pgx.Connect(context.Background(), bad)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Errorf("connect with a wrong password: err = %v, want SQLSTATE 28P01", err)
	}
}

func TestCustomDatabaseAndPort(t *testing.T) {
	port := freePort(t)
	c := start(t, pgcluster.Options{DataDir: filepath.Join(baseDir(t), "data"), Port: port, Database: "my-db"})
	if !strings.Contains(c.URL(), "@127.0.0.1:"+strconv.Itoa(port)+"/my-db?") {
		t.Errorf("URL() = %s", c.URL())
	}
	conn := connect(t, c.URL())
	if got := queryString(t, conn, "SELECT current_database()"); got != "my-db" {
		t.Errorf("current_database() = %q", got)
	}
}

func TestStopRestartReuse(t *testing.T) {
	ctx := context.Background()
	dataDir := filepath.Join(baseDir(t), "data")
	c := start(t, pgcluster.Options{DataDir: dataDir})
	url1 := c.URL()
	conn := connect(t, url1)
	exec(t, conn, "CREATE TABLE kept (v text)")
	exec(t, conn, "INSERT INTO kept VALUES ('before restart')")

	if err := c.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if c.URL() != url1 {
		t.Errorf("URL changed on restart: %s -> %s", url1, c.URL())
	}
	conn = connect(t, c.URL())
	exec(t, conn, "INSERT INTO kept VALUES ('after restart')")

	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := pgx.Connect(ctx, c.URL()); err == nil {
		t.Errorf("connect after Stop succeeded")
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("postmaster.pid after Stop: %v", err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}

	// Start on the same data directory reuses the cluster and its password.
	c2 := start(t, pgcluster.Options{DataDir: dataDir})
	if got, want := password(t, c2), password(t, c); got != want {
		t.Errorf("password after reuse = %q, want %q", got, want)
	}
	conn = connect(t, c2.URL())
	rows, err := conn.Query(ctx, "SELECT v FROM kept ORDER BY v")
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"after restart", "before restart"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rows = %q, want %q", got, want)
	}
}

func TestStalePostmasterPid(t *testing.T) {
	tests := []struct {
		name  string
		crash func(t *testing.T, dataDir string, c *pgcluster.Cluster)
	}{
		{
			name: "server killed",
			crash: func(t *testing.T, dataDir string, c *pgcluster.Cluster) {
				pid := serverPID(t, dataDir)
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				waitGone(t, pid)
			},
		},
		{
			name: "pid file names another process",
			crash: func(t *testing.T, dataDir string, c *pgcluster.Cluster) {
				if err := c.Stop(context.Background()); err != nil {
					t.Fatal(err)
				}
				content := fmt.Sprintf("%d\n%s\n", os.Getpid(), dataDir)
				if err := os.WriteFile(filepath.Join(dataDir, "postmaster.pid"), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "orphaned server still running",
			crash: func(t *testing.T, dataDir string, c *pgcluster.Cluster) {
				// The previous process died without stopping its server:
				// nothing to do, the server keeps running.
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := filepath.Join(baseDir(t), "data")
			c := start(t, pgcluster.Options{DataDir: dataDir})
			conn := connect(t, c.URL())
			exec(t, conn, "CREATE TABLE kept (v int)")
			exec(t, conn, "INSERT INTO kept VALUES (42)")
			conn.Close(context.Background())

			tt.crash(t, dataDir, c)

			c2 := start(t, pgcluster.Options{DataDir: dataDir})
			conn = connect(t, c2.URL())
			if got := queryString(t, conn, "SELECT v::text FROM kept"); got != "42" {
				t.Errorf("kept = %q, want 42", got)
			}
		})
	}
}

func TestMissingBinaries(t *testing.T) {
	empty := t.TempDir()
	t.Setenv(pgcluster.BinDirEnv, empty)
	_, err := pgcluster.Start(context.Background(), pgcluster.Options{DataDir: filepath.Join(t.TempDir(), "data")})
	if !errors.Is(err, pgcluster.ErrBinariesNotFound) {
		t.Fatalf("Start error = %v, want ErrBinariesNotFound", err)
	}
	want := "pgcluster: postgresql server binaries not found: ORBWEAVER_PG_BINDIR=" + empty +
		" lacks initdb, pg_ctl, postgres; install the PostgreSQL server: `apt-get install -y postgresql` on Debian/Ubuntu, " +
		"`dnf install -y postgresql-server` on Fedora/RHEL, `brew install postgresql` on macOS; " +
		"or point ORBWEAVER_PG_BINDIR at the directory holding initdb, pg_ctl and postgres"
	if err.Error() != want {
		t.Errorf("error =\n%s\nwant\n%s", err, want)
	}
}

func TestParentNotTraversable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root hands the server to the postgres user")
	}
	closed := filepath.Join(baseDir(t), "closed")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := pgcluster.Start(context.Background(), pgcluster.Options{DataDir: filepath.Join(closed, "data")})
	if errors.Is(err, pgcluster.ErrBinariesNotFound) {
		t.Skip(err)
	}
	if err == nil {
		t.Fatal("Start succeeded")
	}
	want := "pgcluster: directory " + closed + " (mode -rwx------) is not traversable by the \"postgres\" user"
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %v\nwant prefix %s", err, want)
	}
	if _, err := os.Stat(filepath.Join(closed, "data")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data dir created anyway: %v", err)
	}
}

// Settings replace the defaults; names that are not parameter names are
// refused before anything starts.
func TestCustomSettings(t *testing.T) {
	c := start(t, pgcluster.Options{DataDir: filepath.Join(baseDir(t), "data"),
		Settings: map[string]string{"shared_buffers": "256MB", "max_parallel_workers_per_gather": "0"}})
	conn := connect(t, c.URL())
	for sql, want := range map[string]string{
		"SELECT current_setting('shared_buffers')":                  "256MB",
		"SELECT current_setting('max_parallel_workers_per_gather')": "0",
		"SELECT current_setting('work_mem')":                        "16MB", // a default kept
	} {
		if got := queryString(t, conn, sql); got != want {
			t.Errorf("%s = %q, want %q", sql, got, want)
		}
	}
	_, err := pgcluster.Start(context.Background(), pgcluster.Options{DataDir: filepath.Join(baseDir(t), "other"),
		Settings: map[string]string{"work_mem = 1GB\nfsync": "off"}})
	if err == nil || err.Error() != `pgcluster: setting "work_mem = 1GB\nfsync": not a parameter name` {
		t.Errorf("error = %v", err)
	}
}

func TestDataDirRequired(t *testing.T) {
	_, err := pgcluster.Start(context.Background(), pgcluster.Options{})
	if err == nil || err.Error() != "pgcluster: DataDir is required" {
		t.Errorf("error = %v", err)
	}
}

func serverPID(t *testing.T, dataDir string) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(raw), "\n")
	pid, err := strconv.Atoi(first)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// waitGone waits until pid no longer exists (or is a zombie).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("process %d still running", pid)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
