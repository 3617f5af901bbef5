WITH RECURSIVE tree AS (
  (SELECT id, NULL::bigint AS parent_id, 0 AS depth, coalesce(request_start, time) AS span_start, coalesce(response_end, response_start, request_end, request_start, time) AS span_end,
    client_ip, client_port, server_ip, server_port, method, host, path, status, request_body_size,
    response_body_size, parse_status, traceparent, identification, template, token_not_yet_valid, token_expired
  FROM http_calls
  WHERE id = $3 AND time >= $1 AND time < $2
  ORDER BY time, id
  LIMIT 1)
  UNION ALL
  SELECT c.id, t.id, t.depth + 1, coalesce(c.request_start, c.time), coalesce(c.response_end, c.response_start, c.request_end, c.request_start, c.time),
    c.client_ip, c.client_port, c.server_ip, c.server_port, c.method, c.host, c.path, c.status, c.request_body_size,
    c.response_body_size, c.parse_status, c.traceparent, c.identification, c.template, c.token_not_yet_valid, c.token_expired
  FROM tree t
  JOIN http_calls c ON c.client_ip = t.server_ip
    AND c.time >= $1 AND c.time < $2
    AND c.time >= t.span_start AND c.time <= t.span_end
    AND c.id <> t.id
    AND coalesce(c.request_start, c.time) >= t.span_start
    AND coalesce(c.response_end, c.response_start, c.request_end, c.request_start, c.time) <= t.span_end
  WHERE t.depth < $4
), spans AS (
  SELECT DISTINCT ON (id) *
  FROM tree
  ORDER BY id, depth DESC, span_start DESC
)
SELECT id,
  parent_id,
  depth,
  host(client_ip) AS client_ip,
  client_port,
  host(server_ip) AS server_ip,
  server_port,
  method,
  host,
  path,
  status,
  extract(epoch FROM span_start)::float8 * 1000 AS start_ms,
  extract(epoch FROM span_end - span_start)::float8 * 1000 AS duration_ms,
  request_body_size,
  response_body_size,
  parse_status,
  traceparent,
  identification,
  template,
  token_not_yet_valid,
  token_expired
FROM spans
ORDER BY span_start, id
LIMIT $5;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (int64) = 42
-- $4 (int32) = 3
-- $5 (int64) = 500
-- limit 500, capped false
