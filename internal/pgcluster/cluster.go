// Package pgcluster runs a private PostgreSQL cluster from the system's
// server binaries: the embedded default database of the controller and the
// per-package test database of internal/pgtest.
//
// A cluster lives in one data directory. The first Start runs initdb there
// (superuser "orbweaver" with a random password kept in the data directory,
// scram-sha-256 authentication, listening only on 127.0.0.1); later Starts
// reuse it. When the process runs as root, the server runs as the postgres
// system user, which must be able to reach the data directory.
package pgcluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Superuser is the name of the cluster's superuser.
const Superuser = "orbweaver"

// DefaultDatabase is the database Start creates when Options.Database is empty.
const DefaultDatabase = "orbweaver"

// PasswordFile is the name, inside the data directory, of the file holding
// the superuser's password (mode 0600).
const PasswordFile = ".orbweaver-password"

const (
	confFile = "orbweaver.conf" // rewritten at every start, included by postgresql.conf
	logFile  = "postgresql.log" // server log, inside the data directory
	// maxSocketDir keeps "<dir>/.s.PGSQL.<port>" within the 107 bytes of a
	// unix socket path.
	maxSocketDir = 107 - len("/.s.PGSQL.65535")
	readyTimeout = 60 * time.Second
)

// Options configure Start. Only DataDir is required.
type Options struct {
	// DataDir is the cluster's data directory. It is created (with its
	// parents) when missing and initialized when it holds no PG_VERSION.
	DataDir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// Database is created when missing; "" means DefaultDatabase.
	Database string
	// Logger receives lifecycle messages; nil discards them.
	Logger *slog.Logger
	// Settings are postgresql.conf parameters that replace the defaults
	// writeConf writes (e.g. "shared_buffers": "1GB"). Names are
	// lower-case letters, digits, '_' and '.'.
	Settings map[string]string
}

// Cluster is a running private PostgreSQL server. Its methods are safe for
// concurrent use.
type Cluster struct {
	binDir   string
	dataDir  string
	database string
	port     int
	settings map[string]string
	password string
	owner    *owner
	logger   *slog.Logger

	mu      sync.Mutex // serializes Stop and Restart
	running bool
}

// Start initializes the data directory when needed, starts the server,
// waits until it accepts connections and creates the database. It returns
// an error wrapping ErrBinariesNotFound, with installation advice, when the
// server binaries are missing.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.DataDir == "" {
		return nil, errors.New("pgcluster: DataDir is required")
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: data dir: %w", err)
	}
	for name := range opts.Settings {
		if !validSettingName(name) {
			return nil, fmt.Errorf("pgcluster: setting %q: not a parameter name", name)
		}
	}
	c := &Cluster{
		dataDir:  dataDir,
		database: opts.Database,
		port:     opts.Port,
		logger:   opts.Logger,
		settings: opts.Settings,
	}
	if c.database == "" {
		c.database = DefaultDatabase
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if c.binDir, err = findBinDir(ctx); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if c.owner, err = lookupOwner(); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if err := c.prepareDataDir(ctx); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if c.port == 0 {
		if c.port, err = freePort(); err != nil {
			return nil, fmt.Errorf("pgcluster: %w", err)
		}
	}
	if err := c.start(ctx); err != nil {
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	if err := c.createDatabase(ctx); err != nil {
		_ = c.Stop(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("pgcluster: %w", err)
	}
	return c, nil
}

// URL returns the connection URL of the cluster's database.
func (c *Cluster) URL() string { return c.URLFor(c.database) }

// URLFor returns the connection URL of another database of the cluster,
// as the superuser with password authentication over TCP.
func (c *Cluster) URLFor(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(Superuser, c.password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// DataDir returns the absolute data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// Stop shuts the server down ("fast" mode: sessions are disconnected,
// transactions rolled back) and waits until it has exited. Stopping a
// stopped cluster does nothing.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopLocked(ctx)
}

// Restart stops the server (when running) and starts it again on the same
// port and data directory, waiting until it accepts connections.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.stopLocked(ctx); err != nil {
		return err
	}
	if err := c.startLocked(ctx); err != nil {
		return fmt.Errorf("pgcluster: restart: %w", err)
	}
	return nil
}

func (c *Cluster) stopLocked(ctx context.Context) error {
	if !c.running {
		return nil
	}
	if _, err := os.Stat(filepath.Join(c.dataDir, "postmaster.pid")); errors.Is(err, os.ErrNotExist) {
		// Stopped behind our back (crash, or another Cluster on this data dir).
		c.running = false
		return nil
	}
	if _, err := c.run(ctx, "pg_ctl", "stop", "-D", c.dataDir, "-m", "fast", "-w", "-t", "60", "-s"); err != nil {
		return fmt.Errorf("pgcluster: stop: %w", err)
	}
	c.running = false
	c.logger.Info("postgres stopped", "data_dir", c.dataDir, "port", c.port)
	return nil
}

func (c *Cluster) start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startLocked(ctx)
}

// prepareDataDir creates and, when it holds no cluster yet, initializes
// the data directory; it loads the superuser's password.
func (c *Cluster) prepareDataDir(ctx context.Context) error {
	parent := filepath.Dir(c.dataDir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", parent, err)
	}
	if err := c.owner.checkTraversable(parent); err != nil {
		return err
	}
	if err := os.Mkdir(c.dataDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create data dir: %w", err)
	}
	if err := c.owner.chown(c.dataDir); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(c.dataDir, "PG_VERSION")); err == nil {
		return c.reuseDataDir(ctx)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("data dir: %w", err)
	}
	return c.initdb(ctx)
}

// reuseDataDir checks an existing cluster against the binaries and reads
// its password.
func (c *Cluster) reuseDataDir(ctx context.Context) error {
	raw, err := os.ReadFile(filepath.Join(c.dataDir, "PG_VERSION"))
	if err != nil {
		return fmt.Errorf("read PG_VERSION: %w", err)
	}
	dataVersion := strings.TrimSpace(string(raw))
	binVersion, err := c.majorVersion(ctx)
	if err != nil {
		return err
	}
	if dataVersion != binVersion {
		return fmt.Errorf("data dir %s holds a PostgreSQL %s cluster but the binaries in %s are PostgreSQL %s; "+
			"use a PostgreSQL %s installation (%s) or another data directory",
			c.dataDir, dataVersion, c.binDir, binVersion, dataVersion, BinDirEnv)
	}
	pw, err := os.ReadFile(filepath.Join(c.dataDir, PasswordFile))
	if err != nil {
		return fmt.Errorf("data dir %s was not created by Orbweaver (no %s): %w", c.dataDir, PasswordFile, err)
	}
	c.password = strings.TrimSpace(string(pw))
	c.logger.Debug("reusing postgres data dir", "data_dir", c.dataDir, "version", dataVersion)
	return nil
}

// majorVersion returns the major version of the postgres binary ("15").
func (c *Cluster) majorVersion(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, filepath.Join(c.binDir, "postgres"), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("postgres --version: %w", err)
	}
	// "postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)"
	fields := strings.Fields(string(out))
	if len(fields) < 3 {
		return "", fmt.Errorf("postgres --version: unexpected output %q", out)
	}
	major, _, _ := strings.Cut(fields[2], ".")
	return major, nil
}

// initdb creates a new cluster in the (empty) data directory.
func (c *Cluster) initdb(ctx context.Context) error {
	password, err := randomPassword()
	if err != nil {
		return err
	}
	// initdb wants an empty directory, so the password file for --pwfile
	// lives in the temporary directory until the cluster exists.
	pwFile, err := os.CreateTemp("", "orbweaver-pwfile-*")
	if err != nil {
		return fmt.Errorf("password file: %w", err)
	}
	defer os.Remove(pwFile.Name())
	_, werr := pwFile.WriteString(password + "\n")
	if cerr := pwFile.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("password file: %w", werr)
	}
	if err := c.owner.chown(pwFile.Name()); err != nil {
		return err
	}
	if _, err := c.run(ctx, "initdb",
		"-D", c.dataDir,
		"-U", Superuser,
		"--pwfile="+pwFile.Name(),
		"--auth-local=scram-sha-256",
		"--auth-host=scram-sha-256",
		"--encoding=UTF8",
		"--locale=C",
	); err != nil {
		return fmt.Errorf("initdb %s: %w", c.dataDir, err)
	}
	pwPath := filepath.Join(c.dataDir, PasswordFile)
	if err := os.WriteFile(pwPath, []byte(password+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", pwPath, err)
	}
	if err := c.owner.chown(pwPath); err != nil {
		return err
	}
	conf, err := os.OpenFile(filepath.Join(c.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("postgresql.conf: %w", err)
	}
	_, werr = fmt.Fprintf(conf, "\n# Added by Orbweaver: settings rewritten at every start.\ninclude_if_exists = '%s'\n", confFile)
	if cerr := conf.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("postgresql.conf: %w", werr)
	}
	c.password = password
	c.logger.Info("postgres data dir initialized", "data_dir", c.dataDir, "bin_dir", c.binDir)
	return nil
}

// writeConf writes the settings included by postgresql.conf. They suit a
// small host: durability stays on (fsync, synchronous_commit,
// full_page_writes). For call ingest, shared_buffers = 512MB and
// wal_buffers = 16MB with wal_compression = lz4 were measured (bench
// -only ingest, 2 cores, 2026-11-22) to cost Postgres as much CPU per
// stored call as the values below, so the smaller values stay.
func (c *Cluster) writeConf() error {
	socketDir := c.dataDir
	if len(socketDir) > maxSocketDir {
		// Too long for a unix socket path: TCP only.
		socketDir = ""
	}
	conf := fmt.Sprintf(`# Written by Orbweaver (internal/pgcluster) at every start; edits are lost.
port = %d
listen_addresses = '127.0.0.1'
unix_socket_directories = %s
unix_socket_permissions = 0700
max_connections = 100
shared_buffers = 128MB
work_mem = 16MB
maintenance_work_mem = 64MB
fsync = on
synchronous_commit = on
max_wal_size = 1GB
password_encryption = 'scram-sha-256'
timezone = 'UTC'
log_timezone = 'UTC'
logging_collector = off
log_line_prefix = '%%m [%%p] %%q%%u@%%d '
log_min_messages = warning
`, c.port, quoteConf(socketDir))
	// Later lines win: the caller's settings replace the defaults above.
	for _, name := range slices.Sorted(maps.Keys(c.settings)) {
		conf += name + " = " + quoteConf(c.settings[name]) + "\n"
	}
	path := filepath.Join(c.dataDir, confFile)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return c.owner.chown(path)
}

// startLocked starts the server on c.port and waits until it accepts
// connections. c.mu must be held.
func (c *Cluster) startLocked(ctx context.Context) error {
	if err := c.writeConf(); err != nil {
		return err
	}
	if err := c.clearStalePid(ctx); err != nil {
		return err
	}
	logPath := filepath.Join(c.dataDir, logFile)
	if _, err := c.run(ctx, "pg_ctl", "start", "-D", c.dataDir, "-l", logPath, "-w", "-t", "60", "-s"); err != nil {
		return fmt.Errorf("pg_ctl start: %w%s", err, logTail(logPath))
	}
	c.running = true
	if err := c.waitReady(ctx); err != nil {
		return err
	}
	c.logger.Info("postgres started", "data_dir", c.dataDir, "port", c.port, "bin_dir", c.binDir)
	return nil
}

// clearStalePid handles a postmaster.pid left by a crash: when its process
// is an orphaned server of this data directory, that server is stopped;
// when the process is gone or is something else, the file is removed.
func (c *Cluster) clearStalePid(ctx context.Context) error {
	pidPath := filepath.Join(c.dataDir, "postmaster.pid")
	raw, err := os.ReadFile(pidPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(raw), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		c.logger.Warn("removing malformed postmaster.pid", "path", pidPath)
		return os.Remove(pidPath)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err == nil && bytes.Contains(cmdline, []byte("postgres")) && bytes.Contains(cmdline, []byte(c.dataDir)) {
		c.logger.Warn("stopping an orphaned postgres server of this data dir", "pid", pid, "data_dir", c.dataDir)
		if _, err := c.run(ctx, "pg_ctl", "stop", "-D", c.dataDir, "-m", "fast", "-w", "-t", "60", "-s"); err != nil {
			return fmt.Errorf("stop orphaned server (pid %d): %w", pid, err)
		}
		return nil
	}
	if err == nil || errors.Is(err, os.ErrNotExist) {
		c.logger.Warn("removing stale postmaster.pid", "pid", pid, "path", pidPath)
		if err := os.Remove(pidPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale postmaster.pid: %w", err)
		}
	}
	// Without /proc, leave it to pg_ctl and postgres, which detect dead pids.
	return nil
}

// waitReady connects until the server answers or readyTimeout passes.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var lastErr error
	for {
		conn, err := pgx.Connect(ctx, c.URLFor("postgres"))
		if err == nil {
			err = conn.Ping(ctx)
			_ = conn.Close(ctx)
			if err == nil {
				return nil
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for postgres on port %d: %w%s", c.port, lastErr, logTail(filepath.Join(c.dataDir, logFile)))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// createDatabase creates c.database when missing.
func (c *Cluster) createDatabase(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.URLFor("postgres"))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", c.database).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %q: %w", c.database, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{c.database}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: created concurrently
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %q: %w", c.database, err)
	}
	c.logger.Info("postgres database created", "database", c.database)
	return nil
}

// run executes a server binary as the owner, in the data directory when it
// exists, and returns its combined output (included in the error).
func (c *Cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.Env = childEnv()
	if fi, err := os.Stat(c.dataDir); err == nil && fi.IsDir() {
		cmd.Dir = c.dataDir
	} else {
		cmd.Dir = "/"
	}
	// Own process group: a terminal's Ctrl-C reaches Orbweaver, which then
	// stops the server cleanly, not the server directly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.owner.credential()}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// childEnv is the environment without PG* variables, which would change
// what the server binaries do.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// logTail returns the end of the server log, for error messages.
func logTail(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil || len(raw) == 0 {
		return ""
	}
	const max = 2000
	if len(raw) > max {
		raw = raw[len(raw)-max:]
	}
	return "; server log " + path + " ends with:\n" + strings.TrimSpace(string(raw))
}

// freePort asks the kernel for a free port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random password: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// quoteConf quotes a postgresql.conf string value.
// validSettingName tells whether name can be written as a postgresql.conf
// parameter name.
func validSettingName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

func quoteConf(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
