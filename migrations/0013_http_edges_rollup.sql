-- Rollups of the service map's edges: the calls of one client address to
-- one server, per minute (http_edges_1m) and per 10 minutes
-- (http_edges_10m), so that a service map reads one row per edge and
-- minute at the ends of its range and one per edge and 10 minutes in the
-- middle, instead of every call. Only calls with both a client and a
-- server address have an edge. See docs/schema.md.
--
-- A batch's edges are many (a row per client and server that talked in
-- it), so unlike http_calls_1m they are not upserted by the transaction
-- that stores the calls, which cost Postgres about 30% more CPU per stored
-- call in the bench: that transaction appends them, aggregated, to
-- http_edges_1m_pending (no index, no conflict), and the controller folds
-- the pending rows into both tables every few seconds (one statement:
-- delete the pending rows, upsert their sums). A reader adds up the
-- pending rows and one of the tables; a fold is atomic, so every stored
-- call is counted exactly once at any time.
DO $do$
DECLARE
    timescale boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb');
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['http_edges_1m', 'http_edges_10m'] LOOP
        IF to_regclass(t) IS NOT NULL THEN
            CONTINUE;
        END IF;
        -- Updated in place by every fold of their bucket, like
        -- http_calls_1m: free space on each page keeps the updates HOT.
        EXECUTE format($sql$CREATE TABLE %I (
            bucket             timestamptz NOT NULL,
            agent_id           uuid NOT NULL,
            client_ip          inet NOT NULL,
            server_ip          inet NOT NULL,
            server_port        int NOT NULL,
            calls              bigint NOT NULL,
            errors             bigint NOT NULL,
            bytes              bigint NOT NULL,
            duration_histogram integer[] NOT NULL
        ) WITH (fillfactor = 70)$sql$, t);
        EXECUTE format('CREATE UNIQUE INDEX %I ON %I (bucket, agent_id, client_ip, server_ip, server_port)', t || '_key', t);
        IF timescale THEN
            EXECUTE format($sql$SELECT create_hypertable(%L, 'bucket',
                chunk_time_interval => INTERVAL '7 days', create_default_indexes => false)$sql$, t);
            EXECUTE format($sql$SELECT add_retention_policy(%L, INTERVAL '400 days')$sql$, t);
        END IF;
    END LOOP;
END
$do$;

-- Rows of http_edges_1m not folded yet: several rows may share a key.
CREATE TABLE IF NOT EXISTS http_edges_1m_pending (LIKE http_edges_1m);

-- The edge tables and their buckets, finest first.
CREATE OR REPLACE FUNCTION http_edges_tiers() RETURNS TABLE (tbl text, width interval)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('http_edges_1m', interval '1 minute'), ('http_edges_10m', interval '10 minutes')
$$;

-- Folds the pending edges into every tier; returns the pending rows
-- folded. Rows are upserted in key order (two folds at once wait for each
-- other instead of deadlocking). A histogram grows by concatenation and is
-- merged into one entry per bucket when it would exceed 256 entries.
CREATE OR REPLACE FUNCTION http_edges_fold() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    stmt text := 'WITH moved AS (DELETE FROM http_edges_1m_pending RETURNING *)';
    tier record;
    n bigint;
BEGIN
    FOR tier IN SELECT * FROM http_edges_tiers() LOOP
        stmt := stmt || format($sql$, %1$I AS (
            SELECT date_bin(%2$L, bucket, '2000-01-01 00:00:00+00') AS bucket, agent_id, client_ip, server_ip, server_port,
                sum(calls) AS calls, sum(errors) AS errors, sum(bytes) AS bytes,
                http_histogram_concat(duration_histogram) AS h
            FROM moved
            GROUP BY 1, 2, 3, 4, 5
        ), %3$I AS (
            INSERT INTO %4$I AS r (bucket, agent_id, client_ip, server_ip, server_port, calls, errors, bytes, duration_histogram)
            SELECT bucket, agent_id, client_ip, server_ip, server_port, calls, errors, bytes,
                CASE WHEN cardinality(h) <= 256 THEN h ELSE http_histogram_merge(h) END
            FROM %1$I
            ORDER BY 1, 2, 3, 4, 5
            ON CONFLICT (bucket, agent_id, client_ip, server_ip, server_port) DO UPDATE SET
                calls = r.calls + EXCLUDED.calls,
                errors = r.errors + EXCLUDED.errors,
                bytes = r.bytes + EXCLUDED.bytes,
                duration_histogram = CASE
                    WHEN cardinality(r.duration_histogram) + cardinality(EXCLUDED.duration_histogram) <= 256
                    THEN r.duration_histogram || EXCLUDED.duration_histogram
                    ELSE http_histogram_merge(r.duration_histogram || EXCLUDED.duration_histogram) END
        )$sql$, 'sum_' || tier.tbl, tier.width, 'fold_' || tier.tbl, tier.tbl);
    END LOOP;
    EXECUTE stmt || ' SELECT count(*) FROM moved' INTO n;
    RETURN n;
END
$$;

-- Recomputes the edges of the whole 10-minute spans (the coarsest tier)
-- that overlap [from_time, to_time) from http_calls; returns the rows
-- written to every tier. Like http_calls_rollup_rebuild, it locks the
-- edges against the controller's writes and folds while it runs
-- (http_edges_1m_pending first, as the controller's transactions and
-- folds lock them).
CREATE OR REPLACE FUNCTION http_edges_rollup_rebuild(from_time timestamptz, to_time timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    bin_origin constant timestamptz := '2000-01-01 00:00:00+00';
    lo timestamptz := date_bin('10 minutes', from_time, bin_origin);
    hi timestamptz := date_bin('10 minutes', to_time, bin_origin);
    bounds bigint[] := (SELECT array_agg(lower_us ORDER BY bucket) FROM http_duration_buckets WHERE bucket > 0);
    n bigint;
    m bigint;
BEGIN
    IF hi < to_time THEN
        hi := hi + interval '10 minutes';
    END IF;
    LOCK TABLE http_edges_1m_pending, http_edges_1m, http_edges_10m IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM http_edges_1m_pending WHERE bucket >= lo AND bucket < hi;
    DELETE FROM http_edges_1m WHERE bucket >= lo AND bucket < hi;
    DELETE FROM http_edges_10m WHERE bucket >= lo AND bucket < hi;
    INSERT INTO http_edges_1m (bucket, agent_id, client_ip, server_ip, server_port, calls, errors, bytes, duration_histogram)
    SELECT bucket, agent_id, client_ip, server_ip, server_port,
        sum(calls) FILTER (WHERE k IS NULL OR k = 0), sum(errors) FILTER (WHERE k IS NULL OR k = 0),
        sum(bytes) FILTER (WHERE k IS NULL OR k = 0),
        coalesce(array_agg((d << 21) | least(duration_count - k * 2097151, 2097151)::integer ORDER BY d, k)
            FILTER (WHERE d IS NOT NULL), '{}')
    FROM (
        SELECT date_bin('1 minute', time, bin_origin) AS bucket, agent_id, client_ip, server_ip,
            coalesce(server_port, 0) AS server_port,
            width_bucket(duration_us, bounds) AS d,
            count(*) AS calls,
            count(*) FILTER (WHERE status IS NULL OR status >= 500) AS errors,
            sum(coalesce(request_header_size, 0) + coalesce(request_body_size, 0)
                + coalesce(response_header_size, 0) + coalesce(response_body_size, 0)) AS bytes,
            count(duration_us) AS duration_count
        FROM http_calls
        WHERE time >= lo AND time < hi AND client_ip IS NOT NULL AND server_ip IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5, 6
    ) s
    -- A count above 2^21−1 takes several entries (k = 0, 1, …).
    LEFT JOIN LATERAL generate_series(0, (duration_count - 1) / 2097151) k ON d IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5;
    GET DIAGNOSTICS n = ROW_COUNT;
    -- The 10-minute tier from the minutes just written.
    INSERT INTO http_edges_10m (bucket, agent_id, client_ip, server_ip, server_port, calls, errors, bytes, duration_histogram)
    SELECT date_bin('10 minutes', bucket, bin_origin), agent_id, client_ip, server_ip, server_port,
        sum(calls), sum(errors), sum(bytes), http_histogram_merge(http_histogram_concat(duration_histogram))
    FROM http_edges_1m
    WHERE bucket >= lo AND bucket < hi
    GROUP BY 1, 2, 3, 4, 5;
    GET DIAGNOSTICS m = ROW_COUNT;
    RETURN n + m;
END
$$;

-- Every rollup (http_calls_1m and the edges) of the whole minutes that
-- overlap [from_time, to_time) (of the edges: the whole 10-minute spans),
-- recomputed in one transaction; returns the rows written to all.
CREATE OR REPLACE FUNCTION http_rollups_rebuild(from_time timestamptz, to_time timestamptz) RETURNS bigint
LANGUAGE sql AS $$
    SELECT http_calls_rollup_rebuild(from_time, to_time) + http_edges_rollup_rebuild(from_time, to_time)
$$;

-- Calls stored before this migration (this scans them once).
SELECT http_edges_rollup_rebuild(lo, hi + interval '1 microsecond')
FROM (SELECT min(time) AS lo, max(time) AS hi FROM http_calls) s
WHERE lo IS NOT NULL;
