SELECT host(server_ip) || ':' || server_port AS value, host(server_ip) || ':' || server_port AS text
FROM http_calls
WHERE time >= $1 AND time < $2 AND server_ip IS NOT NULL
GROUP BY server_ip, server_port
ORDER BY count(*) DESC, value
LIMIT $3;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (int64) = 500
-- limit 500, capped false
