WITH rolled AS (
  SELECT bucket AS time, calls, errors, bytes, duration_histogram,
    host(server_ip) || ':' || server_port AS d_server,
    agent_id::text AS d_agent
  FROM http_calls_1m
  WHERE bucket >= $3
    AND bucket < $4
    AND agent_id = ANY($5::text[]::uuid[])
    AND server_ip <<= ANY($6::text[]::inet[])
    AND server_port = $7
    AND ((server_ip = $8::inet AND server_port = $9)
    OR (server_ip = $10::inet AND server_port = $11))
  UNION ALL
  SELECT time, 1, (status IS NULL OR status >= 500)::int, (coalesce(request_header_size, 0) + coalesce(request_body_size, 0) + coalesce(response_header_size, 0) + coalesce(response_body_size, 0)),
    CASE WHEN duration_us IS NULL THEN '{}'::integer[] ELSE ARRAY[(width_bucket(duration_us, (SELECT array_agg(lower_us ORDER BY bucket) FROM http_duration_buckets WHERE bucket > 0)) << 21) | 1] END,
    host(server_ip) || ':' || server_port AS d_server,
    agent_id::text AS d_agent
  FROM http_calls
  WHERE ((time >= $1 AND time < $3) OR (time >= $4 AND time < $2))
    AND agent_id = ANY($5::text[]::uuid[])
    AND server_ip <<= ANY($6::text[]::inet[])
    AND server_port = $7
    AND ((server_ip = $8::inet AND server_port = $9)
    OR (server_ip = $10::inet AND server_port = $11))
), top AS (
  SELECT d_server, d_agent
  FROM rolled
  GROUP BY d_server, d_agent
  ORDER BY sum(calls) DESC, d_server, d_agent
  LIMIT $13
)
SELECT date_bin(make_interval(secs => $12::float8), time, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS time,
  c.d_server AS server, c.d_agent AS agent,
  sum(calls)::float8 / $12::float8 AS rate,
  NULL::float8 AS p95_ms,
  http_histogram_concat(duration_histogram) AS duration_histogram
FROM rolled c
JOIN top t ON coalesce(c.d_server, '') = coalesce(t.d_server, '') AND (c.d_server IS NULL) = (t.d_server IS NULL)
  AND coalesce(c.d_agent, '') = coalesce(t.d_agent, '') AND (c.d_agent IS NULL) = (t.d_agent IS NULL)
GROUP BY 1, c.d_server, c.d_agent
ORDER BY 1, c.d_server, c.d_agent
LIMIT $14;
-- $1 (time.Time) = 2026-11-20T10:00:12.5Z
-- $2 (time.Time) = 2026-11-20T11:00:12.5Z
-- $3 (time.Time) = 2026-11-20T10:01:00Z
-- $4 (time.Time) = 2026-11-20T11:00:00Z
-- $5 ([]string) = [6f1c1a8e-3b2d-4c5e-9f10-112233445566]
-- $6 ([]string) = [10.10.0.0/16]
-- $7 (int32) = 8080
-- $8 (string) = 10.10.0.7
-- $9 (int32) = 8080
-- $10 (string) = 10.10.0.8
-- $11 (int32) = 8080
-- $12 (float64) = 300
-- $13 (int64) = 10
-- $14 (int64) = 10000
-- limit 10000, capped false
-- p95_ms = percentile 0.95 of duration_histogram
