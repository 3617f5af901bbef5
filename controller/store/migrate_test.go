package store_test

import (
	"context"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orbweaver/orbweaver/controller/store"
	orbweaverv1 "github.com/orbweaver/orbweaver/gen/orbweaver/v1"
	"github.com/orbweaver/orbweaver/internal/pgtest"
	"github.com/orbweaver/orbweaver/migrations"
)

func TestMigrateIdempotent(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	for i := 0; i < 2; i++ {
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("Migrate #%d: %v", i+2, err)
		}
	}
	equalStrings(t, "schema_migrations",
		queryStrings(t, s, "SELECT version || ' ' || name || ' ' || (applied_at IS NOT NULL) FROM schema_migrations ORDER BY version"),
		migrationFiles(t, " true"))
	equalStrings(t, "tables",
		queryStrings(t, s, `SELECT c.relname::text FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
			AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1`),
		[]string{"agent_configs", "agent_heartbeats", "agents", "config_defaults", "http_calls",
			"http_calls_1m", "http_duration_buckets", // 0011_http_calls_rollups
			"http_edges_10m", "http_edges_1m", "http_edges_1m_pending", // 0013_http_edges_rollup
			"ingested_batches", "schema_migrations"})
	equalStrings(t, "http_calls columns",
		queryStrings(t, s, `SELECT column_name || ' ' || data_type || ' ' || is_nullable FROM information_schema.columns
			WHERE table_name = 'http_calls' ORDER BY ordinal_position`),
		[]string{
			"id bigint NO", "time timestamp with time zone NO", "agent_id uuid NO",
			"client_ip inet YES", "client_port integer YES", "server_ip inet YES", "server_port integer YES",
			"method text YES", "host text YES", "path text YES", "query text YES", "http_version text YES",
			"status smallint YES", "duration_us bigint YES",
			"request_start timestamp with time zone YES", "request_end timestamp with time zone YES",
			"response_start timestamp with time zone YES", "response_end timestamp with time zone YES",
			"request_header_size integer YES", "request_body_size bigint YES",
			"response_header_size integer YES", "response_body_size bigint YES",
			"request_content_type text YES", "response_content_type text YES", "user_agent text YES",
			"x_forwarded_for text YES", "x_request_id text YES", "traceparent text YES", "parse_status text NO",
			// 0007_http_call_fields
			"identification text YES", "origin inet YES", "template text YES",
			"jwt_iss text YES", "jwt_sub text YES", "jwt_aud text YES",
			"jwt_iat timestamp with time zone YES", "jwt_nbf timestamp with time zone YES", "jwt_exp timestamp with time zone YES",
			"token_not_yet_valid boolean YES", "token_expired boolean YES",
			"credentials_count smallint YES", "multiple_credentials boolean YES",
			"request_headers jsonb YES", "response_headers jsonb YES",
			"request_content_encoding text YES", "response_content_encoding text YES",
			"request_body text YES", "response_body text YES",
			"request_body_decoded_size integer YES", "response_body_decoded_size integer YES",
			"request_body_truncated boolean YES", "response_body_truncated boolean YES",
			"request_retransmissions integer YES", "response_retransmissions integer YES",
		})
	equalStrings(t, "http_calls indexes",
		queryStrings(t, s, `SELECT indexdef FROM pg_indexes WHERE tablename = 'http_calls' ORDER BY indexname`),
		[]string{
			"CREATE INDEX http_calls_agent_id_time_idx ON ONLY public.http_calls USING btree (agent_id, \"time\" DESC)",
			"CREATE INDEX http_calls_errors_server_time_idx ON ONLY public.http_calls USING btree (server_ip, server_port, \"time\" DESC) WHERE ((status IS NULL) OR (status >= 500))",
			"CREATE INDEX http_calls_id_brin_idx ON ONLY public.http_calls USING brin (id) WITH (autosummarize='on')",
			"CREATE INDEX http_calls_identification_time_idx ON ONLY public.http_calls USING btree (identification, \"time\" DESC) WHERE (identification IS NOT NULL)",
			"CREATE INDEX http_calls_origin_time_idx ON ONLY public.http_calls USING btree (origin, \"time\" DESC) WHERE (origin IS NOT NULL)",
			"CREATE INDEX http_calls_server_time_idx ON ONLY public.http_calls USING btree (server_ip, server_port, \"time\" DESC)",
			"CREATE INDEX http_calls_time_idx ON ONLY public.http_calls USING btree (\"time\" DESC)",
		})
	equalStrings(t, "ingested_batches primary key",
		queryStrings(t, s, `SELECT indexdef FROM pg_indexes WHERE tablename = 'ingested_batches'`),
		[]string{"CREATE UNIQUE INDEX ingested_batches_pkey ON public.ingested_batches USING btree (agent_id, boot_id, sequence)"})

	today := time.Now().UTC().Truncate(24 * time.Hour)
	for _, table := range []string{"agent_heartbeats", "http_calls"} {
		want := []string{table + "_default DEFAULT"}
		for d := -1; d <= 2; d++ {
			day := today.AddDate(0, 0, d)
			want = append(want, table+"_p"+day.Format("20060102")+" FOR VALUES FROM ('"+
				day.Format("2006-01-02")+" 00:00:00+00') TO ('"+day.AddDate(0, 0, 1).Format("2006-01-02")+" 00:00:00+00')")
		}
		equalStrings(t, table+" partitions",
			queryStrings(t, s, `SELECT c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
				JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass ORDER BY c.relname`, table),
			want)
	}
	// Partition creation is idempotent too.
	if err := s.EnsurePartitions(ctx, time.Now()); err != nil {
		t.Fatalf("EnsurePartitions: %v", err)
	}
}

// migrationFiles returns "version name"+suffix for each file in
// migrations/, in order.
func migrationFiles(t *testing.T, suffix string) []string {
	t.Helper()
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files { // sorted by name: NNNN_
		num, name, _ := strings.Cut(strings.TrimSuffix(f, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if err != nil {
			t.Fatalf("migration file %s: %v", f, err)
		}
		out = append(out, fmt.Sprintf("%d %s%s", v, name, suffix))
	}
	if len(out) == 0 {
		t.Fatal("no migration files")
	}
	return out
}

// A database created before 0012 has full indexes on identification and
// origin; 0012 replaces them with partial ones under the same names, keeps
// every call, and a query on one identification still uses the index.
func TestMigratePartialClientIndexes(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := s.Pool().Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// Back to the indexes of 0007, as a database migrated before 0012 has.
	exec("DROP INDEX http_calls_identification_time_idx")
	exec("DROP INDEX http_calls_origin_time_idx")
	exec("CREATE INDEX http_calls_identification_time_idx ON http_calls (identification, time DESC)")
	exec("CREATE INDEX http_calls_origin_time_idx ON http_calls (origin, time DESC)")
	exec("DELETE FROM schema_migrations WHERE version = 12")
	now := time.Now()
	calls := make([]*orbweaverv1.HttpCall, 200)
	for i := range calls {
		calls[i] = call(now.Add(time.Duration(i) * time.Millisecond))
		if i%50 == 0 {
			calls[i].Identification = fmt.Sprintf("user-%d", i)
			calls[i].OriginIp = []byte{192, 0, 2, byte(i)}
		}
	}
	if _, err := s.InsertCallBatch(ctx, batch(1, calls...)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("Migrate #%d: %v", i+1, err)
		}
	}
	equalStrings(t, "partial indexes", queryStrings(t, s, `SELECT c.relname || ' ' || pg_get_expr(i.indpred, i.indrelid)
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE c.relname IN ('http_calls_identification_time_idx', 'http_calls_origin_time_idx') ORDER BY 1`),
		[]string{"http_calls_identification_time_idx (identification IS NOT NULL)", "http_calls_origin_time_idx (origin IS NOT NULL)"})
	equalStrings(t, "calls", queryStrings(t, s, `SELECT count(*) || ' ' || count(identification) || ' ' || count(origin) FROM http_calls`),
		[]string{"200 4 4"})
	// The plugin filters with = ANY($n::text[]); a generic plan must be
	// able to use the partial index too.
	conn, err := s.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	for _, sql := range []string{"SET enable_seqscan = off", "SET enable_bitmapscan = off", "SET plan_cache_mode = force_generic_plan",
		"PREPARE by_identification(text[], timestamptz) AS SELECT count(*) FROM http_calls WHERE identification = ANY($1::text[]) AND time >= $2"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	rows, err := conn.Query(ctx, "EXPLAIN EXECUTE by_identification('{user-50}', now() - interval '1 hour')")
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(plan, "\n"), "identification_time_idx") {
		t.Errorf("plan does not use the identification index:\n%s", strings.Join(plan, "\n"))
	}
}

func TestMigrateConcurrentOpen(t *testing.T) {
	url := pgtest.URL(t)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := store.Open(context.Background(), url, nil)
			if err == nil {
				s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open #%d: %v", i, err)
		}
	}
	s := openURL(t, url)
	equalStrings(t, "versions", queryStrings(t, s, "SELECT version || ' ' || name FROM schema_migrations ORDER BY schema_migrations.version"),
		migrationFiles(t, ""))
}

func TestPartitionRouting(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	now := time.Now().UTC()
	today := now.Truncate(24 * time.Hour)
	old := time.Date(2015, 3, 1, 12, 0, 0, 0, time.UTC)
	future := today.AddDate(0, 0, 5).Add(3 * time.Hour)
	b := batch(1, call(old), call(now), call(future))
	if _, err := s.InsertCallBatch(ctx, b); err != nil {
		t.Fatal(err)
	}
	q := "SELECT tableoid::regclass::text || ' ' || extract(year FROM time) FROM http_calls ORDER BY time"
	equalStrings(t, "partitions before", queryStrings(t, s, q), []string{
		"http_calls_default 2015",
		"http_calls_p" + today.Format("20060102") + " " + now.Format("2006"),
		"http_calls_default " + future.Format("2006"),
	})
	// Creating the partition of a day whose rows are in the default
	// partition moves them.
	if err := s.EnsurePartitions(ctx, today.AddDate(0, 0, 4)); err != nil {
		t.Fatalf("EnsurePartitions: %v", err)
	}
	equalStrings(t, "partitions after", queryStrings(t, s, q), []string{
		"http_calls_default 2015",
		"http_calls_p" + today.Format("20060102") + " " + now.Format("2006"),
		"http_calls_p" + future.Format("20060102") + " " + future.Format("2006"),
	})
	if n, err := s.CountCalls(ctx, testAgent); err != nil || n != 3 {
		t.Errorf("CountCalls = %d, %v; want 3", n, err)
	}
}
