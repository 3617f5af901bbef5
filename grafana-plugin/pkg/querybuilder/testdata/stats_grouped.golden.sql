WITH calls AS (
  SELECT time, status, duration_us, request_header_size, request_body_size, response_header_size, response_body_size,
    host(server_ip) || ':' || server_port AS d_server,
    method AS d_method
  FROM http_calls
  WHERE time >= $1
    AND time < $2
    AND starts_with(path, $3)
), top AS (
  SELECT d_server, d_method
  FROM calls
  GROUP BY d_server, d_method
  ORDER BY count(*) DESC, d_server, d_method
  LIMIT $5
)
SELECT date_bin(make_interval(secs => $4::float8), time, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS time,
  c.d_server AS server, c.d_method AS method,
  count(*) / $4::float8 AS rate,
  (count(*) FILTER (WHERE (status IS NULL OR status >= 500)))::float8 / count(*) AS error_rate,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_us / 1000.0) AS p50_ms,
  percentile_cont(0.9) WITHIN GROUP (ORDER BY duration_us / 1000.0) AS p90_ms,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_us / 1000.0) AS p95_ms,
  percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_us / 1000.0) AS p99_ms,
  sum((coalesce(request_header_size, 0) + coalesce(request_body_size, 0) + coalesce(response_header_size, 0) + coalesce(response_body_size, 0)))::float8 AS bytes
FROM calls c
JOIN top t ON coalesce(c.d_server, '') = coalesce(t.d_server, '') AND (c.d_server IS NULL) = (t.d_server IS NULL)
  AND coalesce(c.d_method, '') = coalesce(t.d_method, '') AND (c.d_method IS NULL) = (t.d_method IS NULL)
GROUP BY 1, c.d_server, c.d_method
ORDER BY 1, c.d_server, c.d_method
LIMIT $6;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (string) = /api
-- $4 (float64) = 30
-- $5 (int64) = 5
-- $6 (int64) = 10000
-- limit 10000, capped false
