-- Derived HTTP call fields computed by the agent (agent/decode/httpfields):
-- identification, origin, route template, JWT claims and validity at
-- capture time, credentials, stored header sets (redacted), content codings,
-- optional decoded bodies and retransmissions per direction.
--
-- Every column is nullable without a default, so that the same statement
-- works on plain partitioned tables and on compressed TimescaleDB
-- hypertables, and rows stored before this migration read as NULL.
ALTER TABLE http_calls
    ADD COLUMN IF NOT EXISTS identification             text,
    ADD COLUMN IF NOT EXISTS origin                     inet,
    ADD COLUMN IF NOT EXISTS template                   text,
    ADD COLUMN IF NOT EXISTS jwt_iss                    text,
    ADD COLUMN IF NOT EXISTS jwt_sub                    text,
    ADD COLUMN IF NOT EXISTS jwt_aud                    text,
    ADD COLUMN IF NOT EXISTS jwt_iat                    timestamptz,
    ADD COLUMN IF NOT EXISTS jwt_nbf                    timestamptz,
    ADD COLUMN IF NOT EXISTS jwt_exp                    timestamptz,
    ADD COLUMN IF NOT EXISTS token_not_yet_valid        boolean,
    ADD COLUMN IF NOT EXISTS token_expired              boolean,
    ADD COLUMN IF NOT EXISTS credentials_count          smallint,
    ADD COLUMN IF NOT EXISTS multiple_credentials       boolean,
    ADD COLUMN IF NOT EXISTS request_headers            jsonb,
    ADD COLUMN IF NOT EXISTS response_headers           jsonb,
    ADD COLUMN IF NOT EXISTS request_content_encoding   text,
    ADD COLUMN IF NOT EXISTS response_content_encoding  text,
    ADD COLUMN IF NOT EXISTS request_body               text,
    ADD COLUMN IF NOT EXISTS response_body              text,
    ADD COLUMN IF NOT EXISTS request_body_decoded_size  int,
    ADD COLUMN IF NOT EXISTS response_body_decoded_size int,
    ADD COLUMN IF NOT EXISTS request_body_truncated     boolean,
    ADD COLUMN IF NOT EXISTS response_body_truncated    boolean,
    ADD COLUMN IF NOT EXISTS request_retransmissions    int,
    ADD COLUMN IF NOT EXISTS response_retransmissions   int;

-- "Top clients" and "every call of one client" (by identification or
-- original IP).
CREATE INDEX IF NOT EXISTS http_calls_identification_time_idx ON http_calls (identification, time DESC);
CREATE INDEX IF NOT EXISTS http_calls_origin_time_idx ON http_calls (origin, time DESC);
