-- name: import_list_id
SELECT id FROM lists WHERE slug = $1;

-- name: import_prepare
-- The merge hashes, sorts and groups the whole file at once: let it do so in memory, for this transaction
-- only. JIT compilation costs more than it saves on these plain statements (a fifth of a second each).
SELECT set_config('work_mem', '128MB', true), set_config('jit', 'off', true);

-- name: import_staging
-- Rows as parsed and validated in Python; attributes are JSON text (NULL: not given, so kept as they are).
CREATE TEMPORARY TABLE import_rows (
    line integer NOT NULL,
    email text NOT NULL,
    name text,
    attributes text
) ON COMMIT DROP;

-- name: import_analyze
ANALYZE import_rows;

-- name: import_duplicates
-- A file naming an address more than once (whatever the case): the first line counts, the others are left out.
-- $1 how many to return (all are counted).
WITH first AS (
    SELECT lower(email) AS key, min(line) AS line
    FROM import_rows
    GROUP BY lower(email)
    HAVING count(*) > 1
), dropped AS (
    DELETE FROM import_rows USING first
    WHERE lower(import_rows.email) = first.key AND import_rows.line <> first.line
    RETURNING import_rows.line, import_rows.email, 'duplicate of line ' || first.line AS reason
)
SELECT 'duplicate' AS kind, line, email, reason, count(*) OVER () AS total FROM dropped ORDER BY line LIMIT $1;

-- name: import_refused
-- People an import must not subscribe: blocklisted, suppressed (bounced, complained, unsubscribed from
-- everything, or suppressed by hand), or unsubscribed from this very list. Nothing is written for them.
-- $1 list id, $2 how many to return (all are counted).
WITH refused AS (
    SELECT DISTINCT ON (line) line, reason
    FROM (
        SELECT import_rows.line, 1 AS rank, 'blocklisted: not imported' AS reason
        FROM import_rows JOIN subscribers ON lower(subscribers.email) = lower(import_rows.email)
        WHERE subscribers.status = 'blocklisted'
        UNION ALL
        SELECT import_rows.line, 2,
               'suppressed (' || replace(suppressions.reason, '_', ' ') || '): not imported'
        FROM import_rows JOIN suppressions ON lower(suppressions.email) = lower(import_rows.email)
        UNION ALL
        SELECT import_rows.line, 3, 'unsubscribed from this list: not subscribed again'
        FROM import_rows
        JOIN subscribers ON lower(subscribers.email) = lower(import_rows.email)
        JOIN subscriptions ON subscriptions.subscriber_id = subscribers.id AND subscriptions.list_id = $1
        WHERE subscriptions.status = 'unsubscribed'
    ) AS reasons
    ORDER BY line, rank
), dropped AS (
    DELETE FROM import_rows USING refused
    WHERE import_rows.line = refused.line
    RETURNING import_rows.line, import_rows.email, refused.reason
)
SELECT 'refused' AS kind, line, email, reason, count(*) OVER () AS total FROM dropped ORDER BY line LIMIT $2;

-- name: import_merge
-- New people are inserted; existing ones get the name and attributes the file gives (attributes merged key by
-- key), and rows that would not change are not written. Then every person of the file is subscribed to the
-- list as confirmed with consent source 'import'; a pending subscription is confirmed, a confirmed one kept.
-- The existing people are found in the statement's snapshot, the new ones through RETURNING. Rows go in in the
-- order of the address index: its pages fill one after the other (twice as fast as in the order of the file).
-- $1 list id.
WITH upserted AS (
    INSERT INTO subscribers AS existing (email, name, attributes)
    SELECT email, coalesce(name, ''), coalesce(attributes::jsonb, '{}') FROM import_rows ORDER BY lower(email)
    ON CONFLICT ((lower(email))) DO UPDATE SET
        name = CASE WHEN excluded.name = '' THEN existing.name ELSE excluded.name END,
        attributes = existing.attributes || excluded.attributes,
        updated_at = now()
    WHERE (excluded.name <> '' AND excluded.name <> existing.name)
       OR existing.attributes || excluded.attributes <> existing.attributes
    RETURNING existing.id, existing.xmax = 0 AS inserted
), people AS (
    SELECT id FROM upserted WHERE inserted
    UNION ALL
    SELECT subscribers.id FROM import_rows JOIN subscribers ON lower(subscribers.email) = lower(import_rows.email)
), subscribed AS (
    INSERT INTO subscriptions (subscriber_id, list_id, status, confirmed_at, source)
    SELECT id, $1, 'confirmed', now(), 'import' FROM people
    ON CONFLICT (subscriber_id, list_id) DO UPDATE SET
        status = 'confirmed', confirmed_at = now(), source = 'import', updated_at = now()
    WHERE subscriptions.status = 'pending'
    RETURNING 1
)
SELECT (SELECT count(*) FROM upserted WHERE inserted) AS inserted, (SELECT count(*) FROM subscribed) AS subscribed;

-- name: export_subscribers
-- One row per subscription, and one for each person without any; $1 list id, $2 status (the subscriber's,
-- active or blocklisted, or the subscription's), each NULL for all. Times in UTC, ISO 8601.
SELECT subscribers.email, subscribers.name, subscribers.attributes, subscribers.status, lists.slug,
       subscriptions.status,
       to_char(subscriptions.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       to_char(subscriptions.confirmed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       to_char(subscriptions.unsubscribed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
FROM subscribers
LEFT JOIN subscriptions ON subscriptions.subscriber_id = subscribers.id
LEFT JOIN lists ON lists.id = subscriptions.list_id
WHERE ($1::bigint IS NULL OR subscriptions.list_id = $1)
  AND ($2::text IS NULL OR subscribers.status = $2 OR subscriptions.status = $2)
ORDER BY subscribers.id, lists.slug
