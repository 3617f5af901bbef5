SELECT a.id::text AS id,
  a.name,
  a.hostname,
  a.version,
  a.mode,
  a.state,
  a.state_reason,
  a.capture_requested,
  a.first_seen,
  a.last_seen,
  h.capturing,
  h.packets,
  h.bytes,
  h.kernel_drops,
  h.queue_drops,
  h.parse_errors,
  h.calls_sent,
  h.queue_depth,
  h.capture_error
FROM agents a
LEFT JOIN LATERAL (
  SELECT capturing, packets, bytes, kernel_drops, queue_drops, parse_errors, calls_sent, queue_depth, capture_error
  FROM agent_heartbeats
  WHERE agent_id = a.id AND time >= $1 AND time < $2
  ORDER BY time DESC
  LIMIT 1
) h ON true
WHERE a.last_seen >= $1
  AND a.first_seen < $2
ORDER BY a.name, a.id
LIMIT $3;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (int64) = 1000
-- limit 1000, capped false
