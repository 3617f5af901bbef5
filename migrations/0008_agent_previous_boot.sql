-- How each agent's previous process ended, as reported in its hello
-- (orbweaver.v1.PreviousBoot): after an unclean exit, previous_unacked_calls
-- is the most calls that process captured and lost.
ALTER TABLE agents
    ADD COLUMN IF NOT EXISTS previous_boot_id uuid,
    ADD COLUMN IF NOT EXISTS previous_calls_captured bigint,
    ADD COLUMN IF NOT EXISTS previous_calls_acked bigint,
    ADD COLUMN IF NOT EXISTS previous_unacked_calls bigint,
    ADD COLUMN IF NOT EXISTS previous_queue_drops bigint,
    ADD COLUMN IF NOT EXISTS previous_as_of timestamptz,
    ADD COLUMN IF NOT EXISTS previous_clean_exit boolean;
