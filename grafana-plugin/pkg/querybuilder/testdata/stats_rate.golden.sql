SELECT date_bin(make_interval(secs => $3::float8), time, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS time,
  count(*) / $3::float8 AS rate
FROM http_calls
WHERE time >= $1
  AND time < $2
GROUP BY 1
ORDER BY 1
LIMIT $4;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (float64) = 60
-- $4 (int64) = 10000
-- limit 10000, capped false
