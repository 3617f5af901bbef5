-- The config each agent reported running with at its last acknowledgement
-- (orbweaver.v1.ConfigAck.effective, protojson with proto field names).
ALTER TABLE agent_configs ADD COLUMN IF NOT EXISTS reported jsonb;
