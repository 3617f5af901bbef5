-- Server-wide config defaults and per-agent overrides (see
-- internal/agentconfig). A layer is {"paths": [...], "config": {...}}: the
-- fields named in paths take their value from config (protojson, proto
-- field names). agent_configs.config stays the effective config pushed to
-- the agent: built-in defaults, then config_defaults, then overrides.
CREATE TABLE IF NOT EXISTS config_defaults (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    layer      jsonb NOT NULL DEFAULT '{"paths": [], "config": {}}',
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO config_defaults (id) VALUES (true) ON CONFLICT DO NOTHING;

ALTER TABLE agent_configs ADD COLUMN IF NOT EXISTS overrides jsonb NOT NULL DEFAULT '{"paths": [], "config": {}}';

-- Richer heartbeats (orbweaver.v1.Heartbeat fields 13..21).
ALTER TABLE agent_heartbeats
    ADD COLUMN IF NOT EXISTS cpu_percent double precision,
    ADD COLUMN IF NOT EXISTS rss_bytes bigint,
    ADD COLUMN IF NOT EXISTS capture_start timestamptz,
    ADD COLUMN IF NOT EXISTS packets_per_second double precision,
    ADD COLUMN IF NOT EXISTS bytes_per_second double precision,
    ADD COLUMN IF NOT EXISTS bytes_uploaded bigint,
    ADD COLUMN IF NOT EXISTS queue_drops_by_reason jsonb,
    ADD COLUMN IF NOT EXISTS unacked_calls bigint,
    ADD COLUMN IF NOT EXISTS calls_captured bigint;
