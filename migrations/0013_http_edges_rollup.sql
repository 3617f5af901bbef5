-- Per-minute rollups of the service map's edges: the calls of one client
-- address to one server, so that a service map reads one row per edge and
-- minute instead of every call. Only calls with both a client and a server
-- address have an edge. See docs/schema.md.
--
-- A batch's edges are many (a row per client and server that talked in
-- it), so unlike http_calls_1m they are not upserted by the transaction
-- that stores the calls, which cost Postgres about 30% more CPU per stored
-- call in the bench: that transaction appends them, aggregated, to
-- http_edges_1m_pending (no index, no conflict), and the controller folds
-- the pending rows into http_edges_1m every few seconds (one statement:
-- delete the pending rows, upsert their sums). A reader adds up both
-- tables; a fold is atomic, so every stored call is counted exactly once
-- at any time.
DO $do$
DECLARE
    timescale boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb');
BEGIN
    IF to_regclass('http_edges_1m') IS NOT NULL THEN
        RETURN;
    END IF;
    -- Updated in place by every fold of their minute, like http_calls_1m:
    -- free space on each page keeps the updates HOT.
    CREATE TABLE http_edges_1m (
        bucket             timestamptz NOT NULL,
        agent_id           uuid NOT NULL,
        client_ip          inet NOT NULL,
        server_ip          inet NOT NULL,
        server_port        int NOT NULL,
        calls              bigint NOT NULL,
        errors             bigint NOT NULL,
        bytes              bigint NOT NULL,
        duration_histogram integer[] NOT NULL
    ) WITH (fillfactor = 70);
    IF timescale THEN
        EXECUTE $sql$SELECT create_hypertable('http_edges_1m', 'bucket',
            chunk_time_interval => INTERVAL '7 days', create_default_indexes => false)$sql$;
        EXECUTE $sql$SELECT add_retention_policy('http_edges_1m', INTERVAL '400 days')$sql$;
    END IF;
END
$do$;

CREATE UNIQUE INDEX IF NOT EXISTS http_edges_1m_key
    ON http_edges_1m (bucket, agent_id, client_ip, server_ip, server_port);

-- Rows of http_edges_1m not folded yet: several rows may share a key.
CREATE TABLE IF NOT EXISTS http_edges_1m_pending (LIKE http_edges_1m);

-- Folds the pending edges into http_edges_1m; returns the pending rows
-- folded. Rows are upserted in key order (two folds at once wait for each
-- other instead of deadlocking). A histogram grows by concatenation and is
-- merged into one entry per bucket when it would exceed 256 entries.
CREATE OR REPLACE FUNCTION http_edges_fold() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    WITH moved AS (
        DELETE FROM http_edges_1m_pending RETURNING *
    ), summed AS (
        SELECT bucket, agent_id, client_ip, server_ip, server_port, sum(calls) AS calls,
            sum(errors) AS errors, sum(bytes) AS bytes, http_histogram_concat(duration_histogram) AS h,
            count(*) AS n
        FROM moved
        GROUP BY 1, 2, 3, 4, 5
    ), folded AS (
        INSERT INTO http_edges_1m AS r (bucket, agent_id, client_ip, server_ip, server_port,
            calls, errors, bytes, duration_histogram)
        SELECT bucket, agent_id, client_ip, server_ip, server_port, calls, errors, bytes,
            CASE WHEN cardinality(h) <= 256 THEN h ELSE http_histogram_merge(h) END
        FROM summed
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (bucket, agent_id, client_ip, server_ip, server_port) DO UPDATE SET
            calls = r.calls + EXCLUDED.calls,
            errors = r.errors + EXCLUDED.errors,
            bytes = r.bytes + EXCLUDED.bytes,
            duration_histogram = CASE
                WHEN cardinality(r.duration_histogram) + cardinality(EXCLUDED.duration_histogram) <= 256
                THEN r.duration_histogram || EXCLUDED.duration_histogram
                ELSE http_histogram_merge(r.duration_histogram || EXCLUDED.duration_histogram) END
    )
    SELECT coalesce(sum(summed.n), 0) INTO n FROM summed;
    RETURN n;
END
$$;

-- Recomputes the edges of the whole minutes that overlap [from_time,
-- to_time) from http_calls; returns the rows written. Like
-- http_calls_rollup_rebuild, it locks the edges against the controller's
-- writes and folds while it runs (http_edges_1m_pending first, as the
-- controller's transactions and folds lock them).
CREATE OR REPLACE FUNCTION http_edges_rollup_rebuild(from_time timestamptz, to_time timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    bin_origin constant timestamptz := '2000-01-01 00:00:00+00';
    lo timestamptz := date_bin('1 minute', from_time, bin_origin);
    hi timestamptz := date_bin('1 minute', to_time, bin_origin);
    bounds bigint[] := (SELECT array_agg(lower_us ORDER BY bucket) FROM http_duration_buckets WHERE bucket > 0);
    n bigint;
BEGIN
    IF hi < to_time THEN
        hi := hi + interval '1 minute';
    END IF;
    LOCK TABLE http_edges_1m_pending, http_edges_1m IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM http_edges_1m_pending WHERE bucket >= lo AND bucket < hi;
    DELETE FROM http_edges_1m WHERE bucket >= lo AND bucket < hi;
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
    RETURN n;
END
$$;

-- Every rollup (http_calls_1m and http_edges_1m) of the whole minutes that
-- overlap [from_time, to_time), recomputed in one transaction; returns the
-- rows written to both.
CREATE OR REPLACE FUNCTION http_rollups_rebuild(from_time timestamptz, to_time timestamptz) RETURNS bigint
LANGUAGE sql AS $$
    SELECT http_calls_rollup_rebuild(from_time, to_time) + http_edges_rollup_rebuild(from_time, to_time)
$$;

-- Calls stored before this migration (this scans them once).
SELECT http_edges_rollup_rebuild(lo, hi + interval '1 microsecond')
FROM (SELECT min(time) AS lo, max(time) AS hi FROM http_calls) s
WHERE lo IS NOT NULL;
