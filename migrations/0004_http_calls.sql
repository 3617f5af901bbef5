-- HTTP calls, a time series partitioned like agent_heartbeats. time is the
-- request start, or the response start when the request was not seen.
CREATE SEQUENCE IF NOT EXISTS http_calls_id_seq AS bigint CACHE 100;

DO $do$
DECLARE
    timescale boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb');
BEGIN
    IF to_regclass('http_calls') IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE $sql$
        CREATE TABLE http_calls (
            id                    bigint NOT NULL DEFAULT nextval('http_calls_id_seq'),
            time                  timestamptz NOT NULL,
            agent_id              uuid NOT NULL,
            client_ip             inet,
            client_port           int,
            server_ip             inet,
            server_port           int,
            method                text,
            host                  text,
            path                  text,
            query                 text,
            http_version          text,
            status                smallint,
            duration_us           bigint,
            request_start         timestamptz,
            request_end           timestamptz,
            response_start        timestamptz,
            response_end          timestamptz,
            request_header_size   int,
            request_body_size     bigint,
            response_header_size  int,
            response_body_size    bigint,
            request_content_type  text,
            response_content_type text,
            user_agent            text,
            x_forwarded_for       text,
            x_request_id          text,
            traceparent           text,
            parse_status          text NOT NULL
        )$sql$ || CASE WHEN timescale THEN '' ELSE ' PARTITION BY RANGE (time)' END;
    IF timescale THEN
        EXECUTE $sql$SELECT create_hypertable('http_calls', 'time',
            chunk_time_interval => INTERVAL '1 day', create_default_indexes => false)$sql$;
        EXECUTE $sql$ALTER TABLE http_calls SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'agent_id', timescaledb.compress_orderby = 'time DESC')$sql$;
        EXECUTE $sql$SELECT add_compression_policy('http_calls', INTERVAL '7 days')$sql$;
        EXECUTE $sql$SELECT add_retention_policy('http_calls', INTERVAL '30 days')$sql$;
    ELSE
        EXECUTE 'CREATE TABLE http_calls_default PARTITION OF http_calls DEFAULT';
    END IF;
END
$do$;

ALTER SEQUENCE http_calls_id_seq OWNED BY http_calls.id;

CREATE INDEX IF NOT EXISTS http_calls_time_idx ON http_calls (time DESC);
CREATE INDEX IF NOT EXISTS http_calls_server_time_idx ON http_calls (server_ip, server_port, time DESC);
CREATE INDEX IF NOT EXISTS http_calls_agent_id_time_idx ON http_calls (agent_id, time DESC);
