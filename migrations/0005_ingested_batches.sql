-- One row per call batch stored, so that a batch resent after a reconnect
-- is stored once: the row is inserted in the same transaction as the calls.
CREATE TABLE IF NOT EXISTS ingested_batches (
    agent_id    uuid NOT NULL,
    boot_id     uuid NOT NULL,
    sequence    bigint NOT NULL,
    calls       int NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, boot_id, sequence)
);
