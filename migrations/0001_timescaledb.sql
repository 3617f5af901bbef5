-- Use TimescaleDB when this server offers it. Creating the extension can
-- fail even when it is listed (not in shared_preload_libraries, missing
-- privileges): then the schema falls back to plain PostgreSQL partitioning.
-- Later migrations test pg_extension to choose.
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'timescaledb is available but cannot be created (%): using PostgreSQL partitioning', SQLERRM;
        END;
    END IF;
END
$do$;
