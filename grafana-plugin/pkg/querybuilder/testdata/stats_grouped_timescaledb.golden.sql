WITH calls AS (
  SELECT time, status, duration_us, request_header_size, request_body_size, response_header_size, response_body_size,
    host(client_ip) AS d_client,
    coalesce(status::text, 'none') AS d_status,
    agent_id::text AS d_agent,
    host AS d_host
  FROM http_calls
  WHERE time >= $1
    AND time < $2
), top AS (
  SELECT d_client, d_status, d_agent, d_host
  FROM calls
  GROUP BY d_client, d_status, d_agent, d_host
  ORDER BY count(*) DESC, d_client, d_status, d_agent, d_host
  LIMIT $4
)
SELECT time_bucket(make_interval(secs => $3::float8), time) AS time,
  c.d_client AS client, c.d_status AS status, c.d_agent AS agent, c.d_host AS host,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_us / 1000.0) AS p95_ms
FROM calls c
JOIN top t ON coalesce(c.d_client, '') = coalesce(t.d_client, '') AND (c.d_client IS NULL) = (t.d_client IS NULL)
  AND coalesce(c.d_status, '') = coalesce(t.d_status, '') AND (c.d_status IS NULL) = (t.d_status IS NULL)
  AND coalesce(c.d_agent, '') = coalesce(t.d_agent, '') AND (c.d_agent IS NULL) = (t.d_agent IS NULL)
  AND coalesce(c.d_host, '') = coalesce(t.d_host, '') AND (c.d_host IS NULL) = (t.d_host IS NULL)
GROUP BY 1, c.d_client, c.d_status, c.d_agent, c.d_host
ORDER BY 1, c.d_client, c.d_status, c.d_agent, c.d_host
LIMIT $5;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (float64) = 1
-- $4 (int64) = 10
-- $5 (int64) = 10000
-- limit 10000, capped false
