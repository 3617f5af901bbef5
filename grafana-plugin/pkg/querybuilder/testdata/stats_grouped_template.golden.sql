WITH calls AS (
  SELECT time, status, duration_us, request_header_size, request_body_size, response_header_size, response_body_size,
    coalesce(nullif(template, ''), 'none') AS d_template,
    coalesce(identification, '') AS d_identification,
    coalesce(host(origin), 'none') AS d_origin
  FROM http_calls
  WHERE time >= $1
    AND time < $2
    AND starts_with(template, $3)
), top AS (
  SELECT d_template, d_identification, d_origin
  FROM calls
  GROUP BY d_template, d_identification, d_origin
  ORDER BY count(*) DESC, d_template, d_identification, d_origin
  LIMIT $5
)
SELECT date_bin(make_interval(secs => $4::float8), time, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS time,
  c.d_template AS template, c.d_identification AS identification, c.d_origin AS origin,
  count(*) / $4::float8 AS rate,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_us / 1000.0) AS p95_ms
FROM calls c
JOIN top t ON coalesce(c.d_template, '') = coalesce(t.d_template, '') AND (c.d_template IS NULL) = (t.d_template IS NULL)
  AND coalesce(c.d_identification, '') = coalesce(t.d_identification, '') AND (c.d_identification IS NULL) = (t.d_identification IS NULL)
  AND coalesce(c.d_origin, '') = coalesce(t.d_origin, '') AND (c.d_origin IS NULL) = (t.d_origin IS NULL)
GROUP BY 1, c.d_template, c.d_identification, c.d_origin
ORDER BY 1, c.d_template, c.d_identification, c.d_origin
LIMIT $6;
-- $1 (time.Time) = 2026-11-20T10:00:00Z
-- $2 (time.Time) = 2026-11-20T11:00:00Z
-- $3 (string) = /api/
-- $4 (float64) = 60
-- $5 (int64) = 10
-- $6 (int64) = 10000
-- limit 10000, capped false
