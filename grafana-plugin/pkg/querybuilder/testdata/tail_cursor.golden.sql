SELECT coalesce(max(id), 0)::int8 AS cursor
FROM http_calls
WHERE time >= $1;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- limit 1, capped false
