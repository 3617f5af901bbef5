WITH rolled AS (
  SELECT bucket AS time, calls, errors, bytes, duration_histogram,
    client_ip,
    server_ip
  FROM http_edges_10m
  WHERE bucket >= $7
    AND bucket < $4
    AND server_ip = $5::inet AND server_port = $6
  UNION ALL
  SELECT bucket AS time, calls, errors, bytes, duration_histogram,
    client_ip,
    server_ip
  FROM http_edges_1m
  WHERE bucket >= $3
    AND bucket < $7
    AND server_ip = $5::inet AND server_port = $6
  UNION ALL
  SELECT bucket AS time, calls, errors, bytes, duration_histogram,
    client_ip,
    server_ip
  FROM http_edges_1m_pending
  WHERE bucket >= $3
    AND bucket < $4
    AND server_ip = $5::inet AND server_port = $6
  UNION ALL
  SELECT time, 1, (status IS NULL OR status >= 500)::int, (coalesce(request_header_size, 0) + coalesce(request_body_size, 0) + coalesce(response_header_size, 0) + coalesce(response_body_size, 0)),
    CASE WHEN duration_us IS NULL THEN '{}'::integer[] ELSE ARRAY[(width_bucket(duration_us, (SELECT array_agg(lower_us ORDER BY bucket) FROM http_duration_buckets WHERE bucket > 0)) << 21) | 1] END,
    client_ip,
    server_ip
  FROM http_calls
  WHERE ((time >= $1 AND time < $3) OR (time >= $4 AND time < $2))
    AND server_ip = $5::inet AND server_port = $6
)
SELECT host(client_ip) AS source,
  host(server_ip) AS target,
  sum(calls)::bigint AS calls,
  sum(errors)::bigint AS errors,
  NULL::float8 AS p95_ms,
  http_histogram_concat(duration_histogram) AS duration_histogram
FROM rolled
WHERE client_ip IS NOT NULL AND server_ip IS NOT NULL
GROUP BY client_ip, server_ip
ORDER BY calls DESC, source, target
LIMIT $8;
-- $1 (time.Time) = 2026-11-20T10:00:12.5Z
-- $2 (time.Time) = 2026-11-20T11:00:12.5Z
-- $3 (time.Time) = 2026-11-20T10:01:00Z
-- $4 (time.Time) = 2026-11-20T11:00:00Z
-- $5 (string) = 10.0.0.1
-- $6 (int32) = 8080
-- $7 (time.Time) = 2026-11-20T10:10:00Z
-- $8 (int64) = 200
-- limit 200, capped false
-- p95_ms = percentile 0.95 of duration_histogram
