WITH target AS (
  SELECT id AS target_id, server_ip AS target_ip, server_port AS target_port,
    coalesce(request_start, time) AS target_start, coalesce(response_end, response_start, request_end, request_start, time) AS target_end
  FROM http_calls
  WHERE id = $3 AND time >= $1 AND time < $2
  LIMIT 1
)
SELECT id,
  time,
  agent_id::text AS agent_id,
  host(client_ip) AS client_ip,
  client_port,
  host(server_ip) AS server_ip,
  server_port,
  method,
  host,
  path,
  query,
  status,
  (duration_us / 1000.0)::float8 AS duration_ms,
  request_body_size,
  response_body_size,
  parse_status,
  x_request_id,
  traceparent,
  identification,
  host(origin) AS origin,
  template,
  token_not_yet_valid,
  token_expired,
  credentials_count,
  multiple_credentials
FROM http_calls
JOIN target ON server_ip = target_ip AND server_port = target_port
WHERE time >= $1
  AND time < $2
  AND id <> target_id
  AND coalesce(request_start, time) < target_end
  AND coalesce(response_end, response_start, request_end, request_start, time) > target_start
ORDER BY coalesce(request_start, time), id
LIMIT $4;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (int64) = 42
-- $4 (int64) = 1000
-- limit 1000, capped false
