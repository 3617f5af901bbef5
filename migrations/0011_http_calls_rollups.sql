-- Per-minute rollups of http_calls, so that statistics and the service
-- map's nodes read a few thousand rows an hour instead of every call. The controller
-- updates them in the transaction that stores a call batch (exactly once,
-- like the calls); http_calls_rollup_rebuild() recomputes them from the
-- calls for a time range (backfill, repair, bulk loads that bypass the
-- controller). See docs/schema.md.

-- The duration histogram's buckets (internal/durhist): bucket 0 is below
-- 1 µs; bucket i ≥ 1 is [lower_us, upper_us) with lower(1) = 1 and
-- lower(i+1) = lower(i) + max(1, lower(i) / 16), i.e. at most 1/16 of its
-- lower bound wide; the last bucket (from 2^42 µs, 51 days) is open.
CREATE TABLE IF NOT EXISTS http_duration_buckets (
    bucket   smallint PRIMARY KEY,
    lower_us bigint,
    upper_us bigint
);
INSERT INTO http_duration_buckets (bucket, lower_us, upper_us)
WITH RECURSIVE b(i, lo) AS (
    SELECT 1, 1::bigint
    UNION ALL
    SELECT i + 1, lo + greatest(1, lo / 16) FROM b WHERE lo < 4398046511104
)
SELECT 0, NULL, 1
UNION ALL
SELECT i, lo, lead(lo) OVER (ORDER BY i) FROM b
ON CONFLICT DO NOTHING;

-- One row per minute (bucket, UTC), agent and server ip:port (NULLs are
-- values of the key). A histogram is an integer[] of entries
-- bucket·2^21 + count (count 1 … 2^21−1), a multiset: a bucket may appear
-- in several entries, in any order.
DO $do$
DECLARE
    timescale boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb');
BEGIN
    IF to_regclass('http_calls_1m') IS NOT NULL THEN
        RETURN;
    END IF;
    -- Rows are updated in place by every batch of their minute: free space
    -- on each page keeps the updates HOT (no new index entries).
    CREATE TABLE http_calls_1m (
        bucket             timestamptz NOT NULL,
        agent_id           uuid NOT NULL,
        server_ip          inet,
        server_port        int,
        calls              bigint NOT NULL,
        errors             bigint NOT NULL,
        bytes              bigint NOT NULL,
        duration_count     bigint NOT NULL,
        duration_sum_us    bigint NOT NULL,
        duration_min_us    bigint,
        duration_max_us    bigint,
        duration_histogram integer[] NOT NULL
    ) WITH (fillfactor = 70);
    IF timescale THEN
        -- Not compressed: late calls update old minutes. Kept longer than
        -- http_calls (30 days).
        EXECUTE $sql$SELECT create_hypertable('http_calls_1m', 'bucket',
            chunk_time_interval => INTERVAL '7 days', create_default_indexes => false)$sql$;
        EXECUTE $sql$SELECT add_retention_policy('http_calls_1m', INTERVAL '400 days')$sql$;
    END IF;
END
$do$;

CREATE UNIQUE INDEX IF NOT EXISTS http_calls_1m_key
    ON http_calls_1m (bucket, agent_id, server_ip, server_port) NULLS NOT DISTINCT;

-- A histogram with one entry per bucket, by bucket (counts above 2^21−1
-- take several entries).
CREATE OR REPLACE FUNCTION http_histogram_merge(h integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(array_agg((b << 21) | least(n - k * 2097151, 2097151)::integer ORDER BY b, k), '{}')
    FROM (SELECT e >> 21 AS b, sum(e & 2097151) AS n FROM unnest(h) e GROUP BY 1) s,
        generate_series(0, (n - 1) / 2097151) k
$$;

-- The concatenation of histograms (a histogram of all their durations).
CREATE OR REPLACE AGGREGATE http_histogram_concat(integer[]) (
    SFUNC = array_cat,
    STYPE = integer[],
    INITCOND = '{}'
);

-- Recomputes the rollups of the whole minutes that overlap [from_time,
-- to_time) from http_calls; returns the rows written. It locks the rollups
-- against the controller's updates while it runs (readers go on): a batch
-- stored meanwhile waits, then adds its calls to what was recomputed.
CREATE OR REPLACE FUNCTION http_calls_rollup_rebuild(from_time timestamptz, to_time timestamptz) RETURNS bigint
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
    LOCK TABLE http_calls_1m IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM http_calls_1m WHERE bucket >= lo AND bucket < hi;
    INSERT INTO http_calls_1m (bucket, agent_id, server_ip, server_port, calls, errors, bytes,
        duration_count, duration_sum_us, duration_min_us, duration_max_us, duration_histogram)
    SELECT bucket, agent_id, server_ip, server_port,
        sum(calls) FILTER (WHERE k IS NULL OR k = 0), sum(errors) FILTER (WHERE k IS NULL OR k = 0),
        sum(bytes) FILTER (WHERE k IS NULL OR k = 0), sum(duration_count) FILTER (WHERE k IS NULL OR k = 0),
        coalesce(sum(duration_sum_us) FILTER (WHERE k IS NULL OR k = 0), 0),
        min(duration_min_us), max(duration_max_us),
        coalesce(array_agg((d << 21) | least(duration_count - k * 2097151, 2097151)::integer ORDER BY d, k)
            FILTER (WHERE d IS NOT NULL), '{}')
    FROM (
        SELECT date_bin('1 minute', time, bin_origin) AS bucket, agent_id, server_ip, server_port,
            width_bucket(duration_us, bounds) AS d,
            count(*) AS calls,
            count(*) FILTER (WHERE status IS NULL OR status >= 500) AS errors,
            sum(coalesce(request_header_size, 0) + coalesce(request_body_size, 0)
                + coalesce(response_header_size, 0) + coalesce(response_body_size, 0)) AS bytes,
            count(duration_us) AS duration_count, sum(duration_us) AS duration_sum_us,
            min(duration_us) AS duration_min_us, max(duration_us) AS duration_max_us
        FROM http_calls
        WHERE time >= lo AND time < hi
        GROUP BY 1, 2, 3, 4, 5
    ) s
    -- A count above 2^21−1 takes several entries (k = 0, 1, …).
    LEFT JOIN LATERAL generate_series(0, (duration_count - 1) / 2097151) k ON d IS NOT NULL
    GROUP BY 1, 2, 3, 4;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- A call tree or the concurrent calls of a call start from a call id. Ids
-- grow with insertion, so a BRIN index (a min/max per 128 pages) leads to
-- the few page ranges an id can be in; it costs inserts almost nothing.
CREATE INDEX IF NOT EXISTS http_calls_id_brin_idx ON http_calls USING brin (id) WITH (autosummarize = on);

-- The errors of one server (5xx or no response), newest first: only the
-- failed calls have an entry. The plugin writes status classes as ranges of
-- constants (status >= 500 AND status < 600) so that the planner can use it.
CREATE INDEX IF NOT EXISTS http_calls_errors_server_time_idx ON http_calls (server_ip, server_port, time DESC)
    WHERE status IS NULL OR status >= 500;

-- Calls stored before this migration (this scans them once).
SELECT http_calls_rollup_rebuild(lo, hi + interval '1 microsecond')
FROM (SELECT min(time) AS lo, max(time) AS hi FROM http_calls) s
WHERE lo IS NOT NULL;
