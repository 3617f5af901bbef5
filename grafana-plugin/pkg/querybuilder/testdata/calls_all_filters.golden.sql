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
  AND client_ip <<= ANY($4::text[]::inet[])
  AND server_ip <<= ANY($5::text[]::inet[])
  AND origin <<= ANY($6::text[]::inet[])
  AND client_port = $7
  AND server_port = $8
  AND server_ip = $9::inet AND server_port = $10
  AND host = ANY($11::text[])
  AND method = ANY($12::text[])
  AND status = ANY($13::int2[])
  AND (status >= 500 AND status < 600)
  AND duration_us >= $14
  AND duration_us <= $15
  AND identification = ANY($16::text[])
  AND template = ANY($17::text[])
  AND token_expired
  AND multiple_credentials = $18
  AND starts_with(path, $19)
  AND starts_with(template, $20)
  AND path ~ $21
  AND strpos(lower(path), lower($22)) > 0
  AND template ~ $23
ORDER BY duration_us DESC NULLS LAST, id DESC
LIMIT $24;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 ([]string) = [6f1c1a8e-3b2d-4c5e-9f10-112233445566]
-- $4 ([]string) = [10.0.0.0/8]
-- $5 ([]string) = [192.168.1.10]
-- $6 ([]string) = [203.0.113.0/24]
-- $7 (int32) = 40000
-- $8 (int32) = 8080
-- $9 (string) = 192.168.1.10
-- $10 (int32) = 8080
-- $11 ([]string) = [orders.internal]
-- $12 ([]string) = [POST]
-- $13 ([]int16) = [503]
-- $14 (int64) = 1500
-- $15 (int64) = 2000000
-- $16 ([]string) = [alice]
-- $17 ([]string) = [/api/orders/{id}]
-- $18 (bool) = true
-- $19 (string) = /api/
-- $20 (string) = /api/
-- $21 (string) = ^/api/v[0-9]+/orders
-- $22 (string) = Order
-- $23 (string) = ^/api/orders/
-- $24 (int64) = 50
-- limit 50, capped false
