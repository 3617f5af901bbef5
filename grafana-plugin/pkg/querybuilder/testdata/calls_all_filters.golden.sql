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
  traceparent
FROM http_calls
WHERE time >= $1
  AND time < $2
  AND agent_id = $3::uuid
  AND client_ip <<= $4::inet
  AND server_ip <<= $5::inet
  AND client_port = $6
  AND server_port = $7
  AND host = $8
  AND method = $9
  AND starts_with(path, $10)
  AND path ~ $11
  AND strpos(lower(path), lower($12)) > 0
  AND status = $13
  AND status >= $14 AND status < $15
  AND duration_us >= $16
  AND duration_us <= $17
ORDER BY duration_us DESC NULLS LAST, id DESC
LIMIT $18;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (string) = 6f1c1a8e-3b2d-4c5e-9f10-112233445566
-- $4 (string) = 10.0.0.0/8
-- $5 (string) = 192.168.1.10
-- $6 (int32) = 40000
-- $7 (int32) = 8080
-- $8 (string) = orders.internal
-- $9 (string) = POST
-- $10 (string) = /api/
-- $11 (string) = ^/api/v[0-9]+/orders
-- $12 (string) = Order
-- $13 (int16) = 503
-- $14 (int16) = 500
-- $15 (int16) = 600
-- $16 (int64) = 1500
-- $17 (int64) = 2000000
-- $18 (int64) = 50
-- limit 50, capped false
