package store_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orbweaver/orbweaver/controller/store"
	"github.com/orbweaver/orbweaver/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// open opens a Store on a new database, closed when t ends.
func open(t testing.TB) *store.Store {
	t.Helper()
	return openURL(t, pgtest.URL(t))
}

func openURL(t testing.TB, url string) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := store.Open(ctx, url, logger)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// strings runs a query returning one text column.
func queryStrings(t testing.TB, s *store.Store, sql string, args ...any) []string {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return got
}

func equalStrings(t testing.TB, what string, got, want []string) {
	t.Helper()
	if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	s := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// After a database restart (an outage), the pool reconnects: the first
// insert after the restart may fail, a retry succeeds.
func TestInsertAfterDatabaseRestart(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if _, err := s.InsertCallBatch(ctx, batch(1, call(time.Now()))); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.Cluster(t).Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if _, err = s.InsertCallBatch(ctx, batch(2, call(time.Now()))); err == nil {
			break
		}
		t.Logf("attempt %d after restart: %v", attempt+1, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.CountCalls(ctx, testAgent); err != nil || n != 2 {
		t.Errorf("CountCalls = %d, %v; want 2", n, err)
	}
}
