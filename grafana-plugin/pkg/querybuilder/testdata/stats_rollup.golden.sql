WITH rolled AS (
  SELECT bucket AS time, calls, errors, bytes, duration_histogram
  FROM http_calls_1m
  WHERE bucket >= $3
    AND bucket < $4
  UNION ALL
  SELECT time, 1, (status IS NULL OR status >= 500)::int, (coalesce(request_header_size, 0) + coalesce(request_body_size, 0) + coalesce(response_header_size, 0) + coalesce(response_body_size, 0)),
    CASE WHEN duration_us IS NULL THEN '{}'::integer[] ELSE ARRAY[(width_bucket(duration_us, (SELECT array_agg(lower_us ORDER BY bucket) FROM http_duration_buckets WHERE bucket > 0)) << 21) | 1] END
  FROM http_calls
  WHERE ((time >= $1 AND time < $3) OR (time >= $4 AND time < $2))
)
SELECT date_bin(make_interval(secs => $5::float8), time, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS time,
  sum(calls)::float8 / $5::float8 AS rate,
  sum(errors)::float8 / sum(calls) AS error_rate,
  NULL::float8 AS p50_ms,
  NULL::float8 AS p99_ms,
  sum(bytes)::float8 AS bytes,
  http_histogram_concat(duration_histogram) AS duration_histogram
FROM rolled
GROUP BY 1
ORDER BY 1
LIMIT $6;
-- $1 (time.Time) = 2026-11-20T10:00:12.5Z
-- $2 (time.Time) = 2026-11-20T11:00:12.5Z
-- $3 (time.Time) = 2026-11-20T10:01:00Z
-- $4 (time.Time) = 2026-11-20T11:00:00Z
-- $5 (float64) = 60
-- $6 (int64) = 10000
-- limit 10000, capped false
-- p50_ms = percentile 0.5 of duration_histogram
-- p99_ms = percentile 0.99 of duration_histogram
