-- Agent heartbeats, a time series: a hypertable on TimescaleDB, else a
-- table partitioned by day on time (partitions created ahead by the
-- controller) with a DEFAULT partition for any other time.
DO $do$
DECLARE
    timescale boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb');
BEGIN
    IF to_regclass('agent_heartbeats') IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE $sql$
        CREATE TABLE agent_heartbeats (
            time              timestamptz NOT NULL,
            agent_id          uuid NOT NULL,
            capturing         boolean,
            packets           bigint,
            bytes             bigint,
            kernel_drops      bigint,
            queue_drops       bigint,
            parse_errors      bigint,
            calls_sent        bigint,
            queue_depth       bigint,
            in_flight_batches int,
            last_ack_rtt_us   bigint,
            capture_error     text
        )$sql$ || CASE WHEN timescale THEN '' ELSE ' PARTITION BY RANGE (time)' END;
    IF timescale THEN
        EXECUTE $sql$SELECT create_hypertable('agent_heartbeats', 'time',
            chunk_time_interval => INTERVAL '1 day', create_default_indexes => false)$sql$;
        EXECUTE $sql$ALTER TABLE agent_heartbeats SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'agent_id', timescaledb.compress_orderby = 'time DESC')$sql$;
        EXECUTE $sql$SELECT add_compression_policy('agent_heartbeats', INTERVAL '7 days')$sql$;
        EXECUTE $sql$SELECT add_retention_policy('agent_heartbeats', INTERVAL '30 days')$sql$;
    ELSE
        EXECUTE 'CREATE TABLE agent_heartbeats_default PARTITION OF agent_heartbeats DEFAULT';
    END IF;
END
$do$;

CREATE INDEX IF NOT EXISTS agent_heartbeats_agent_id_time_idx ON agent_heartbeats (agent_id, time DESC);
