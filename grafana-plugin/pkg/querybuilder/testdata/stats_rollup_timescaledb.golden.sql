WITH rolled AS (
  SELECT bucket AS time, calls, errors, bytes, duration_histogram,
    host(server_ip) || ':' || server_port AS d_server
  FROM http_calls_1m
  WHERE bucket >= $3
    AND bucket < $4
  UNION ALL
  SELECT time, 1, (status IS NULL OR status >= 500)::int, (coalesce(request_header_size, 0) + coalesce(request_body_size, 0) + coalesce(response_header_size, 0) + coalesce(response_body_size, 0)),
    CASE WHEN duration_us IS NULL THEN '{}'::integer[] ELSE ARRAY[(width_bucket(duration_us, (SELECT array_agg(lower_us ORDER BY bucket) FROM http_duration_buckets WHERE bucket > 0)) << 21) | 1] END,
    host(server_ip) || ':' || server_port AS d_server
  FROM http_calls
  WHERE ((time >= $1 AND time < $3) OR (time >= $4 AND time < $2))
), top AS (
  SELECT d_server
  FROM rolled
  GROUP BY d_server
  ORDER BY sum(calls) DESC, d_server
  LIMIT $6
)
SELECT time_bucket(make_interval(secs => $5::float8), time) AS time,
  c.d_server AS server,
  sum(errors)::float8 / sum(calls) AS error_rate
FROM rolled c
JOIN top t ON coalesce(c.d_server, '') = coalesce(t.d_server, '') AND (c.d_server IS NULL) = (t.d_server IS NULL)
GROUP BY 1, c.d_server
ORDER BY 1, c.d_server
LIMIT $7;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (time.Time) = 2026-11-20T10:00:00Z
-- $4 (time.Time) = 2026-11-20T11:00:00Z
-- $5 (float64) = 3600
-- $6 (int64) = 10
-- $7 (int64) = 10000
-- limit 10000, capped false
