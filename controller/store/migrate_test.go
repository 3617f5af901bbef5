package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/orbweaver/orbweaver/controller/store"
	"github.com/orbweaver/orbweaver/internal/pgtest"
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
		[]string{"1 timescaledb true", "2 agents true", "3 agent_heartbeats true", "4 http_calls true", "5 ingested_batches true", "6 config_layers true", "7 http_call_fields true", "8 agent_previous_boot true", "9 reader_role true", "10 reported_config true"})
	equalStrings(t, "tables",
		queryStrings(t, s, `SELECT c.relname::text FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
			AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1`),
		[]string{"agent_configs", "agent_heartbeats", "agents", "config_defaults", "http_calls", "ingested_batches", "schema_migrations"})
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
			"CREATE INDEX http_calls_identification_time_idx ON ONLY public.http_calls USING btree (identification, \"time\" DESC)",
			"CREATE INDEX http_calls_origin_time_idx ON ONLY public.http_calls USING btree (origin, \"time\" DESC)",
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
	equalStrings(t, "versions", queryStrings(t, s, "SELECT version::text FROM schema_migrations ORDER BY schema_migrations.version"),
		[]string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"})
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
