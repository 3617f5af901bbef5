-- orbweaver_reader: the read-only role the Grafana plugin (and analysts)
-- use. It cannot log in; give it to a login role:
--   CREATE ROLE grafana LOGIN PASSWORD '...' IN ROLE orbweaver_reader;
-- Roles are cluster-wide; the grants below are per database. When the
-- migrating user may not create roles, this step is skipped with a notice
-- (an administrator can run it later) instead of failing the controller.
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orbweaver_reader') THEN
        CREATE ROLE orbweaver_reader NOLOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO orbweaver_reader', current_database());
    GRANT USAGE ON SCHEMA public TO orbweaver_reader;
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO orbweaver_reader;
    -- Tables created later by the controller (new migrations, partitions).
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO orbweaver_reader;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'orbweaver_reader not set up: % (run migrations/0009_reader_role.sql as a role with CREATEROLE)', SQLERRM;
END
$do$;
