SELECT template AS value, template AS text
FROM http_calls
WHERE time >= $1 AND time < $2 AND template IS NOT NULL AND template <> ''
GROUP BY template
ORDER BY count(*) DESC, value
LIMIT $3;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (int64) = 500
-- limit 500, capped false
