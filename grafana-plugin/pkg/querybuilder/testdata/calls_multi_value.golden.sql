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
  AND agent_id = ANY($3::text[]::uuid[])
  AND server_ip <<= ANY($4::text[]::inet[])
  AND ((server_ip = $5::inet AND server_port = $6)
    OR (server_ip = $7::inet AND server_port = $8))
  AND host = ANY($9::text[])
  AND method = ANY($10::text[])
  AND status = ANY($11::int2[])
  AND (status IS NULL OR (status >= 400 AND status < 600))
ORDER BY time DESC, id DESC
LIMIT $12;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 ([]string) = [6f1c1a8e-3b2d-4c5e-9f10-112233445566 11111111-1111-4111-8111-111111111111]
-- $4 ([]string) = [10.0.0.2 10.1.0.0/16]
-- $5 (string) = 10.0.0.2
-- $6 (int32) = 8080
-- $7 (string) = 10.0.0.3
-- $8 (int32) = 9090
-- $9 ([]string) = [orders pricing]
-- $10 ([]string) = [GET POST]
-- $11 ([]int16) = [404 503]
-- $12 (int64) = 1000
-- limit 1000, capped false
