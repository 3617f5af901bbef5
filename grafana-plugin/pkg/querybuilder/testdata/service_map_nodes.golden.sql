SELECT host(server_ip) AS id,
  count(*) AS calls,
  count(*) FILTER (WHERE (status IS NULL OR status >= 500)) AS errors,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_us / 1000.0) AS p95_ms
FROM http_calls
WHERE time >= $1
  AND time < $2
  AND method = ANY($3::text[])
  AND server_ip = ANY ($4::inet[])
GROUP BY server_ip
ORDER BY id;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 ([]string) = [GET]
-- $4 ([]string) = [10.0.0.1 10.0.0.2]
-- limit 2, capped false
