SELECT host(client_ip) AS source,
  host(server_ip) AS target,
  count(*) AS calls,
  count(*) FILTER (WHERE (status IS NULL OR status >= 500)) AS errors,
  NULL::float8 AS p95_ms,
  http_histogram_concat(CASE WHEN duration_us IS NULL THEN '{}'::integer[] ELSE ARRAY[(width_bucket(duration_us, (SELECT array_agg(lower_us ORDER BY bucket) FROM http_duration_buckets WHERE bucket > 0)) << 21) | 1] END) AS duration_histogram
FROM http_calls
WHERE time >= $1
  AND time < $2
  AND method = ANY($3::text[])
  AND client_ip IS NOT NULL
  AND server_ip IS NOT NULL
GROUP BY client_ip, server_ip
ORDER BY calls DESC, source, target
LIMIT $4;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 ([]string) = [GET]
-- $4 (int64) = 700
-- limit 700, capped true
-- p95_ms = percentile 0.95 of duration_histogram
