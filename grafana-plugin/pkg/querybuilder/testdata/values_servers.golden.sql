WITH rolled AS (
  SELECT bucket AS time, calls, errors, bytes, duration_histogram,
    server_ip,
    server_port
  FROM http_calls_1m
  WHERE bucket >= $3
    AND bucket < $4
  UNION ALL
  SELECT time, 1, (status IS NULL OR status >= 500)::int, (coalesce(request_header_size, 0) + coalesce(request_body_size, 0) + coalesce(response_header_size, 0) + coalesce(response_body_size, 0)),
    CASE WHEN duration_us IS NULL THEN '{}'::integer[] ELSE ARRAY[(width_bucket(duration_us, (SELECT array_agg(lower_us ORDER BY bucket) FROM http_duration_buckets WHERE bucket > 0)) << 21) | 1] END,
    server_ip,
    server_port
  FROM http_calls
  WHERE ((time >= $1 AND time < $3) OR (time >= $4 AND time < $2))
)
SELECT host(server_ip) || ':' || server_port AS value, host(server_ip) || ':' || server_port AS text
FROM rolled
WHERE server_ip IS NOT NULL
GROUP BY server_ip, server_port
ORDER BY sum(calls) DESC, value
LIMIT $5;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (time.Time) = 2026-11-20T10:00:00Z
-- $4 (time.Time) = 2026-11-20T11:00:00Z
-- $5 (int64) = 500
-- limit 500, capped false
