WITH calls AS (
  SELECT time, status, duration_us, request_header_size, request_body_size, response_header_size, response_body_size,
    host(server_ip) || ':' || server_port AS d_server
  FROM http_calls
  WHERE time >= $1
    AND time < $2
), top AS (
  SELECT d_server
  FROM calls
  GROUP BY d_server
  ORDER BY count(*) DESC, d_server
  LIMIT $4
)
SELECT date_bin(make_interval(secs => $3::float8), time, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS time,
  c.d_server AS server,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_us / 1000.0) AS p95_ms
FROM calls c
JOIN top t ON coalesce(c.d_server, '') = coalesce(t.d_server, '') AND (c.d_server IS NULL) = (t.d_server IS NULL)
GROUP BY 1, c.d_server
ORDER BY 1, c.d_server
LIMIT $5;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (float64) = 60
-- $4 (int64) = 10
-- $5 (int64) = 10000
-- limit 10000, capped false
