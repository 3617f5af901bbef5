package pgtest_test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/orbweaver/orbweaver/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func dbName(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.Cluster(t).URLFor("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	return exists
}

func TestURL(t *testing.T) {
	pgtest.Cluster(t) // skips when PostgreSQL is missing
	ctx := context.Background()
	var names []string
	t.Run("fresh databases", func(t *testing.T) {
		for i := 0; i < 2; i++ {
			dsn := pgtest.URL(t)
			names = append(names, dbName(t, dsn))
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			// An open session must not prevent the drop at cleanup.
			t.Cleanup(func() { conn.Close(ctx) })
			var tables int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables); err != nil {
				t.Fatal(err)
			}
			if tables != 0 {
				t.Errorf("%s has %d tables, want 0", names[i], tables)
			}
			if _, err := conn.Exec(ctx, "CREATE TABLE mine (v int)"); err != nil {
				t.Fatal(err)
			}
		}
		if names[0] == names[1] || !strings.HasPrefix(names[0], "t") || !strings.HasPrefix(names[1], "t") {
			t.Errorf("database names = %q", names)
		}
		for _, n := range names {
			if !databaseExists(t, n) {
				t.Errorf("database %s missing during the test", n)
			}
		}
	})
	if len(names) != 2 {
		t.Fatalf("subtest made %d databases", len(names))
	}
	for _, n := range names {
		if databaseExists(t, n) {
			t.Errorf("database %s still exists after its test", n)
		}
	}
}

func TestParallel(t *testing.T) {
	for _, name := range []string{"a", "b", "c", "d"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			conn, err := pgx.Connect(context.Background(), pgtest.URL(t))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			if _, err := conn.Exec(context.Background(), "CREATE TABLE same_name (v int)"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMissingBinaries(t *testing.T) {
	tests := []struct {
		name     string
		ci       string
		wantExit int
		want     []string
	}{
		{
			name:     "skipped locally",
			ci:       "",
			wantExit: 0,
			want:     []string{"--- SKIP: TestURL", "pgtest: skipping, PostgreSQL is needed: pgcluster: postgresql server binaries not found", "apt-get install -y postgresql"},
		},
		{
			name:     "fails on CI",
			ci:       "true",
			wantExit: 1,
			want:     []string{"pgtest: start PostgreSQL: pgcluster: postgresql server binaries not found", "apt-get install -y postgresql"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestURL$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), "ORBWEAVER_PG_BINDIR="+t.TempDir(), "CI="+tt.ci)
			out, err := cmd.CombinedOutput()
			exit := 0
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				exit = exitErr.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if exit != tt.wantExit {
				t.Errorf("exit code = %d, want %d; output:\n%s", exit, tt.wantExit, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
