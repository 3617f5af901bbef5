-- Most calls carry no identification and no origin (both NULL): index only
-- the calls that do. Each full index cost every inserted call an index
-- entry and its WAL record; the partial indexes serve the same queries
-- (identification = ..., origin = ... imply IS NOT NULL), under the same
-- names.
--
-- An index made by 0007 (no predicate) is dropped and built again as a
-- partial index: this scans http_calls once per index and blocks inserts
-- while it runs (seconds per ten million calls). Running the file again
-- changes nothing.
DO $do$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['http_calls_identification_time_idx', 'http_calls_origin_time_idx'] LOOP
        IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                   WHERE c.relname = name AND c.relnamespace = current_schema()::regnamespace
                     AND i.indpred IS NULL) THEN
            EXECUTE format('DROP INDEX %I', name);
        END IF;
    END LOOP;
END
$do$;

CREATE INDEX IF NOT EXISTS http_calls_identification_time_idx ON http_calls (identification, time DESC)
    WHERE identification IS NOT NULL;
CREATE INDEX IF NOT EXISTS http_calls_origin_time_idx ON http_calls (origin, time DESC)
    WHERE origin IS NOT NULL;
