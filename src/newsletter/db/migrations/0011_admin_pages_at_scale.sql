-- The admin pages at a million subscribers (bench/admin_pages.py). Before, the dashboard counted every
-- subscription of every list on each view (0.2 s; its chart, a month of sign-ups: 0.3 s after a large
-- import), the subscribers page searched by scanning every address and name (1.4 s to find one person), and a
-- list filter that few people pass walked the whole table (2.5 s).
--
-- The new indexes are built first, under locks that let the tables be read, and the ones they replace are
-- dropped last: dropping takes a lock that stops readers too, until this migration commits.

-- A list's members in id order: the (list_id, status) index gains the subscriber, so one list and status is
-- one ordered range of it. Same number of indexes; each entry 8 bytes wider.
CREATE INDEX subscriptions_list_status_subscriber ON subscriptions (list_id, status, subscriber_id);

-- People found by the beginning of their address or name: the unique index on lower(email) becomes a
-- text_pattern_ops index (byte order, which the range of a beginning needs; equality and uniqueness
-- unchanged, so every query and ON CONFLICT that used it still does). Names get an index of the same kind:
-- the one new index a sign-up or an import writes to.
CREATE UNIQUE INDEX subscribers_email_key_pattern ON subscribers (lower(email) text_pattern_ops);
CREATE INDEX subscribers_name_beginning ON subscribers (lower(name) text_pattern_ops);

-- The few blocklisted people, found without walking everyone; active people (nearly all) are not in it.
CREATE INDEX subscribers_blocklisted ON subscribers (id) WHERE status = 'blocklisted';

-- The dashboard's chart of sign-ups per day: a day's count, once the day is past, is kept here instead of
-- being counted again on every view (the day of a large import holds a million). A record of what happened:
-- people erased later stay counted on the day they joined.
CREATE TABLE signups_per_day (
    day date PRIMARY KEY,
    added bigint NOT NULL
);

-- Counts that would read hundreds of thousands of rows on every view of the dashboard (a list's subscriptions
-- per status, the sign-ups of a day after a large import) are shown as the planner estimates them: the row
-- estimate of EXPLAIN for a statement. Statistics over list and status together make a list's estimate its
-- own, where the product of two separate ones misjudges a list that differs from the rest.
CREATE STATISTICS subscriptions_list_status_stats (mcv) ON list_id, status FROM subscriptions;

CREATE FUNCTION estimated_rows(statement text) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$  -- EXPLAIN is refused in a STABLE function
DECLARE
    plan json;
BEGIN
    EXECUTE 'EXPLAIN (FORMAT JSON) ' || statement INTO plan;
    RETURN (plan -> 0 -> 'Plan' ->> 'Plan Rows')::bigint;
END
$$;

DROP INDEX subscriptions_list_status;
ALTER INDEX subscriptions_list_status_subscriber RENAME TO subscriptions_list_status;
DROP INDEX subscribers_email_key;
ALTER INDEX subscribers_email_key_pattern RENAME TO subscribers_email_key;

ANALYZE subscriptions;
