-- Agents known to the controller, one row per agent id (kept in the agent's
-- state file across restarts).
CREATE TABLE IF NOT EXISTS agents (
    id                uuid PRIMARY KEY,
    name              text NOT NULL DEFAULT '',
    hostname          text NOT NULL DEFAULT '',
    version           text NOT NULL DEFAULT '',
    -- NULL when the agent did not say.
    mode              text CHECK (mode IN ('interface', 'file', 'upload')),
    -- JSON array of orbweaver.v1.NetworkInterface (protojson, proto field names).
    interfaces        jsonb NOT NULL DEFAULT '[]',
    boot_id           uuid,
    first_seen        timestamptz NOT NULL DEFAULT now(),
    last_seen         timestamptz NOT NULL DEFAULT now(),
    capture_requested boolean NOT NULL DEFAULT true,
    state             text NOT NULL DEFAULT '',
    state_reason      text NOT NULL DEFAULT ''
);

CREATE INDEX IF NOT EXISTS agents_name_idx ON agents (name);

-- The config pushed to each agent, versioned; acked_version is the last
-- version the agent answered for, apply_error its error ('' when applied).
CREATE TABLE IF NOT EXISTS agent_configs (
    agent_id      uuid PRIMARY KEY REFERENCES agents (id) ON DELETE CASCADE,
    config        jsonb NOT NULL,
    version       bigint NOT NULL,
    acked_version bigint NOT NULL DEFAULT 0,
    apply_error   text NOT NULL DEFAULT '',
    updated_at    timestamptz NOT NULL DEFAULT now()
);
