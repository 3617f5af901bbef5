// Package pgtest gives each test package one private PostgreSQL cluster
// (internal/pgcluster) and each test a new empty database on it.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestX(t *testing.T) {
//		url := pgtest.URL(t) // a fresh database, dropped when t ends
//		...
//	}
//
// When the PostgreSQL server binaries are missing, tests calling URL or
// Cluster are skipped with installation advice, except when the environment
// has CI=true, where the test binary fails instead.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orbweaver/orbweaver/internal/pgcluster"
)

// shared is the state Main sets up for the test binary. It is written once,
// before m.Run, and only read afterwards.
var shared struct {
	cluster *pgcluster.Cluster
	skip    string // why tests needing Postgres are skipped
	nextDB  atomic.Int64
}

// Main starts one cluster in a temporary directory, runs the tests, stops
// the cluster, removes the directory and exits with the tests' code.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "orbweaver-pgtest-*")
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Running as root, the server runs as the postgres user, which must be
	// able to traverse the directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	c, err := pgcluster.Start(ctx, pgcluster.Options{DataDir: filepath.Join(dir, "data"), Database: "postgres"})
	cancel()
	switch {
	case errors.Is(err, pgcluster.ErrBinariesNotFound) && os.Getenv("CI") != "true":
		shared.skip = "pgtest: skipping, PostgreSQL is needed: " + err.Error()
		return m.Run()
	case err != nil:
		fmt.Fprintf(os.Stderr, "pgtest: start PostgreSQL: %v\n", err)
		return 1
	}
	shared.cluster = c
	code := m.Run()
	stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Stop(stopCtx); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Cluster returns the package's shared cluster. It skips t when PostgreSQL
// is not installed and fails it when Main was not called.
func Cluster(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	if shared.skip != "" {
		t.Skip(shared.skip)
	}
	if shared.cluster == nil {
		t.Fatal("pgtest: call pgtest.Main(m) from TestMain")
	}
	return shared.cluster
}

// URL creates a new empty database (named tN) on the shared cluster and
// returns its connection URL. The database is dropped, disconnecting any
// remaining sessions, when t and its subtests have finished. Safe for
// parallel tests.
func URL(t testing.TB) string {
	t.Helper()
	c := Cluster(t)
	name := fmt.Sprintf("t%d", shared.nextDB.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := admin(ctx, c, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := admin(ctx, c, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return c.URLFor(name)
}

// admin runs one statement in the cluster's maintenance database.
func admin(ctx context.Context, c *pgcluster.Cluster, sql string) error {
	conn, err := pgx.Connect(ctx, c.URLFor("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}
