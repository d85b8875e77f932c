-- name: dashboard_growth
-- New subscribers per day over the last $1 days, today included. A day before yesterday is counted once and
-- kept in signups_per_day (yesterday may still see the commit of an import that began before midnight). Today
-- and yesterday are counted on each view while a day holds at most $2 rows, and estimated beyond.
WITH days AS (
    SELECT today - back AS day, (today - back)::timestamp AT TIME ZONE 'UTC' AS starts, back <= 1 AS live
    FROM (SELECT (now() AT TIME ZONE 'UTC')::date AS today) AS now,
         generate_series(0, $1::integer - 1) AS back
), counted AS (
    SELECT days.day,
           (SELECT count(*) FROM subscribers
            WHERE created_at >= days.starts AND created_at < days.starts + interval '1 day') AS added
    FROM days
    WHERE NOT days.live AND NOT EXISTS (SELECT FROM signups_per_day WHERE signups_per_day.day = days.day)
), kept AS (
    INSERT INTO signups_per_day (day, added) SELECT day, added FROM counted
    ON CONFLICT (day) DO NOTHING
), live AS (
    SELECT day, starts,
           estimated_rows(format('SELECT FROM subscribers WHERE created_at >= %L AND created_at < %L',
                                 starts, starts + interval '1 day')) AS estimate
    FROM days
    WHERE live
)
SELECT days.day, coalesce(live.estimate > $2, false) AS estimated,
       coalesce(signups_per_day.added, counted.added,
                CASE WHEN live.estimate > $2 THEN live.estimate
                     ELSE (SELECT count(*) FROM subscribers
                           WHERE created_at >= live.starts
                             AND created_at < live.starts + interval '1 day') END)
           AS added
FROM days
LEFT JOIN signups_per_day ON signups_per_day.day = days.day
LEFT JOIN counted ON counted.day = days.day
LEFT JOIN live ON live.day = days.day
ORDER BY days.day;
