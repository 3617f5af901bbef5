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
  AND id > $2
  AND server_ip <<= ANY($3::text[]::inet[])
  AND method = ANY($4::text[])
  AND (status >= 500 AND status < 600)
ORDER BY id
LIMIT $5;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (int64) = 42
-- $3 ([]string) = [10.0.0.2]
-- $4 ([]string) = [GET PUT]
-- $5 (int64) = 500
-- limit 500, capped false
