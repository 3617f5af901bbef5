SELECT h.time,
  coalesce(nullif(a.name, ''), h.agent_id::text) AS agent,
  h.packets::float8 AS packets,
  h.bytes::float8 AS bytes,
  h.kernel_drops::float8 AS kernel_drops,
  h.queue_drops::float8 AS queue_drops,
  h.parse_errors::float8 AS parse_errors,
  h.calls_sent::float8 AS calls_sent,
  h.queue_depth::float8 AS queue_depth,
  h.in_flight_batches::float8 AS in_flight_batches,
  (h.last_ack_rtt_us / 1000.0)::float8 AS last_ack_rtt_ms
FROM agent_heartbeats h
LEFT JOIN agents a ON a.id = h.agent_id
WHERE h.time >= $1
  AND h.time < $2
  AND h.agent_id = ANY($3::text[]::uuid[])
ORDER BY h.time, agent
LIMIT $4;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 ([]string) = [6f1c1a8e-3b2d-4c5e-9f10-112233445566]
-- $4 (int64) = 10000
-- limit 10000, capped false
