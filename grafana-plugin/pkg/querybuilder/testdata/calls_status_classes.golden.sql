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
WHERE time >= $1
  AND time < $2
  AND (status IS NULL OR (status >= 100 AND status < 300) OR (status >= 400 AND status < 600))
ORDER BY time DESC, id DESC
LIMIT $3;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (int64) = 1000
-- limit 1000, capped false
