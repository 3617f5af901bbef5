WITH calls AS MATERIALIZED (
  SELECT client_ip, server_ip, (status IS NULL OR status >= 500) AS error, duration_us
  FROM http_calls
  WHERE time >= $1
    AND time < $2
    AND client_ip IS NOT NULL
    AND server_ip IS NOT NULL
), edges AS (
  SELECT client_ip, server_ip, count(*) AS calls, count(*) FILTER (WHERE error) AS errors
  FROM calls
  GROUP BY client_ip, server_ip
  ORDER BY calls DESC, host(client_ip), host(server_ip)
  LIMIT $3
)
SELECT host(e.client_ip) AS source,
  host(e.server_ip) AS target,
  e.calls,
  e.errors,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY c.duration_us / 1000.0) AS p95_ms
FROM edges e
JOIN calls c ON c.client_ip = e.client_ip AND c.server_ip = e.server_ip
GROUP BY e.client_ip, e.server_ip, e.calls, e.errors
ORDER BY e.calls DESC, source, target;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (int64) = 200
-- limit 200, capped false
