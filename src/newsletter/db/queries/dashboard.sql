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

-- name: dashboard_funnel
-- The sign-up funnel over the last $1 days, today included: per day and list, the sign-ups (subscriptions
-- made that day other than by an import) and the confirmations (subscriptions confirmed that day, other than
-- imported ones); only the days and lists with either. As in dashboard_growth, a day before yesterday is
-- counted once and kept in funnel_per_day, and today and yesterday are counted on each view: reading at most
-- $2 + 1 entries of each kind a day, and when a day holds more, estimated per list from a sample of the table.
WITH days AS (
    SELECT today - back AS day, (today - back)::timestamp AT TIME ZONE 'UTC' AS starts, back <= 1 AS live
    FROM (SELECT (now() AT TIME ZONE 'UTC')::date AS today) AS now,
         generate_series(0, $1::integer - 1) AS back
), counted AS (
    SELECT days.day,
           (SELECT coalesce(jsonb_object_agg(list_id, jsonb_build_array(sum_signups, sum_confirmations)), '{}')
            FROM (SELECT list_id, sum(signups) AS sum_signups, sum(confirmations) AS sum_confirmations
                  FROM (SELECT list_id, count(*) AS signups, 0 AS confirmations FROM subscriptions
                        WHERE source <> 'import'
                          AND created_at >= days.starts AND created_at < days.starts + interval '1 day'
                        GROUP BY list_id
                        UNION ALL
                        SELECT list_id, 0, count(*) FROM subscriptions
                        WHERE source <> 'import' AND confirmed_at IS NOT NULL
                          AND confirmed_at >= days.starts AND confirmed_at < days.starts + interval '1 day'
                        GROUP BY list_id) AS facts
                  GROUP BY list_id) AS per_list) AS counts
    FROM days
    WHERE NOT days.live AND NOT EXISTS (SELECT FROM funnel_per_day WHERE funnel_per_day.day = days.day)
), kept AS (
    INSERT INTO funnel_per_day (day, counts) SELECT day, counts FROM counted
    ON CONFLICT (day) DO NOTHING
), past AS (
    SELECT day, counts FROM funnel_per_day WHERE day IN (SELECT day FROM days WHERE NOT live)
    UNION ALL
    SELECT day, counts FROM counted
), live_days AS (
    SELECT day, starts FROM days WHERE live
), signed_up AS (
    SELECT live_days.day, sample.list_id
    FROM live_days, LATERAL (
        SELECT list_id FROM subscriptions
        WHERE source <> 'import'
          AND created_at >= live_days.starts AND created_at < live_days.starts + interval '1 day'
        LIMIT $2::integer + 1
    ) AS sample
), confirmed AS (
    SELECT live_days.day, sample.list_id
    FROM live_days, LATERAL (
        SELECT list_id FROM subscriptions
        WHERE source <> 'import' AND confirmed_at IS NOT NULL
          AND confirmed_at >= live_days.starts AND confirmed_at < live_days.starts + interval '1 day'
        LIMIT $2::integer + 1
    ) AS sample
), over_budget AS (
    SELECT day FROM signed_up GROUP BY day HAVING count(*) > $2::integer
    UNION
    SELECT day FROM confirmed GROUP BY day HAVING count(*) > $2::integer
), live_counted AS (
    SELECT day, list_id, sum(signups)::bigint AS signups, sum(confirmations)::bigint AS confirmations
    FROM (SELECT day, list_id, 1 AS signups, 0 AS confirmations FROM signed_up
          UNION ALL
          SELECT day, list_id, 0, 1 FROM confirmed) AS facts
    WHERE day NOT IN (SELECT day FROM over_budget)
    GROUP BY day, list_id
), sample AS (
    -- The share of the table's pages that holds about $2 rows, 100 pages at least (a small table is read
    -- whole); the density as the last ANALYZE or VACUUM measured it (about 100 rows a page before either).
    SELECT least(100, 100.0 * greatest(100, $2::integer / coalesce(
               nullif(greatest(reltuples, 0), 0) / nullif(relpages, 0), 100))
           / greatest(1, pg_relation_size(oid) / current_setting('block_size')::integer))::real AS percent
    FROM pg_class WHERE oid = 'subscriptions'::regclass
), sampled AS (
    -- The same pages on every view (REPEATABLE): the figures do not move between two looks at the page.
    SELECT list_id, created_at, confirmed_at
    FROM subscriptions TABLESAMPLE SYSTEM ((SELECT percent FROM sample)) REPEATABLE (0)
    WHERE source <> 'import' AND EXISTS (SELECT FROM over_budget)
), live_estimated AS (
    -- A day beyond the budget, per list, from a sample of the table's pages: the planner's estimate would
    -- take the share of sign-ups (not imports) among all rows as independent of the day, which it is not.
    SELECT live_days.day, sampled.list_id,
           (count(*) FILTER (WHERE sampled.created_at >= live_days.starts
                               AND sampled.created_at < live_days.starts + interval '1 day')
            * 100 / (SELECT percent FROM sample))::bigint AS signups,
           (count(*) FILTER (WHERE sampled.confirmed_at >= live_days.starts
                               AND sampled.confirmed_at < live_days.starts + interval '1 day')
            * 100 / (SELECT percent FROM sample))::bigint AS confirmations
    FROM live_days
    JOIN over_budget USING (day)
    JOIN sampled ON (sampled.created_at >= live_days.starts
                     AND sampled.created_at < live_days.starts + interval '1 day')
                 OR (sampled.confirmed_at >= live_days.starts
                     AND sampled.confirmed_at < live_days.starts + interval '1 day')
    GROUP BY live_days.day, sampled.list_id
)
SELECT past.day, per_list.key::bigint AS list_id, (per_list.value ->> 0)::bigint AS signups,
       (per_list.value ->> 1)::bigint AS confirmations, false AS estimated
FROM past, jsonb_each(past.counts) AS per_list
UNION ALL
SELECT day, list_id, signups, confirmations, false FROM live_counted
UNION ALL
SELECT day, list_id, signups, confirmations, true FROM live_estimated
ORDER BY day, list_id;
