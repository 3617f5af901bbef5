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
  AND agent_id = ANY($3::text[]::uuid[])
  AND client_ip <<= ANY($4::text[]::inet[])
  AND server_ip <<= ANY($5::text[]::inet[])
  AND client_port = $6
  AND server_port = $7
  AND (host(server_ip) || ':' || server_port) = ANY($8::text[])
  AND host = ANY($9::text[])
  AND method = ANY($10::text[])
  AND starts_with(path, $11)
  AND path ~ $12
  AND strpos(lower(path), lower($13)) > 0
  AND status = ANY($14::int2[])
  AND status / 100 = ANY($15::int2[])
  AND duration_us >= $16
  AND duration_us <= $17
ORDER BY duration_us DESC NULLS LAST, id DESC
LIMIT $18;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 ([]string) = [6f1c1a8e-3b2d-4c5e-9f10-112233445566]
-- $4 ([]string) = [10.0.0.0/8]
-- $5 ([]string) = [192.168.1.10]
-- $6 (int32) = 40000
-- $7 (int32) = 8080
-- $8 ([]string) = [192.168.1.10:8080]
-- $9 ([]string) = [orders.internal]
-- $10 ([]string) = [POST]
-- $11 (string) = /api/
-- $12 (string) = ^/api/v[0-9]+/orders
-- $13 (string) = Order
-- $14 ([]int16) = [503]
-- $15 ([]int16) = [5]
-- $16 (int64) = 1500
-- $17 (int64) = 2000000
-- $18 (int64) = 50
-- limit 50, capped false
