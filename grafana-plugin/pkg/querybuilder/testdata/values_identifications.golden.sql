SELECT identification AS value, identification AS text
FROM http_calls
WHERE time >= $1 AND time < $2 AND identification IS NOT NULL AND identification <> ''
GROUP BY identification
ORDER BY count(*) DESC, value
LIMIT $3;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (int64) = 500
-- limit 500, capped false
