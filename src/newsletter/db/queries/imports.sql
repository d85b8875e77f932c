-- name: import_prepare
-- For the import's transaction only: the merge sorts and hashes the whole file at once, in memory. JIT
-- compilation costs more than it saves on these plain statements (a fifth of a second each).
SELECT set_config('work_mem', '128MB', true), set_config('jit', 'off', true);

-- name: import_staging
-- Rows as parsed and validated in Python, attributes as JSON text; attributes or a name NULL mean that the
-- file does not give them, so an existing subscriber keeps theirs. The address's key and the jsonb of the
-- attributes are computed as the rows are copied in, while Python parses the next chunk, rather than in the
-- merge, which nothing overlaps.
CREATE TEMPORARY TABLE import_rows (
    line integer NOT NULL,
    email text NOT NULL,
    name text,
    attributes_text text,
    attributes jsonb GENERATED ALWAYS AS (attributes_text::jsonb) STORED,
    key text NOT NULL GENERATED ALWAYS AS (lower(email)) STORED
) ON COMMIT DROP;

-- name: import_analyze
ANALYZE import_rows;

-- name: import_restore_suppressions
-- The suppressions of erased addresses that the file brings back (migration 0012) are restored before the
-- merge judges the rows, so that it refuses them with their reason. Nothing to do, and nothing read, when no
-- erased address was suppressed.
INSERT INTO suppressions (email, reason, detail)
SELECT staged.email, erased.reason, 'suppressed before an erasure of this address'
FROM import_rows AS staged
JOIN erased_suppressions AS erased ON erased.address_hash = erased_address_hash(staged.email)
WHERE EXISTS (SELECT FROM erased_suppressions)
ON CONFLICT ((lower(email))) DO NOTHING;

-- name: import_merge
-- Merges the staged file in one statement. Each row is either:
-- * a duplicate: its address (whatever the case) came on an earlier line;
-- * refused, with nothing written: blocklisted, suppressed (bounced, complained, unsubscribed from
--   everything, or suppressed by hand), or unsubscribed from this very list;
-- * new: inserted, and subscribed to the list as confirmed with consent source 'import';
-- * existing: the name and attributes the file gives are applied (attributes merged key by key; a row that
--   would not change is not written), and the person is subscribed to the list, a pending subscription
--   confirmed, a confirmed one kept.
-- Everything is matched by hash (one pass over each table), and new people go in sorted by the bytes of
-- their address (COLLATE "C"), the order of the address index (text_pattern_ops), whose pages then fill one
-- after the other. They go in with a plain INSERT, not ON CONFLICT (which costs a speculative insertion per
-- row): an address that a sign-up commits after this statement's snapshot fails it with a unique violation,
-- and the import starts again. Existing people whose name and attributes would not change are left out of
-- the UPDATE.
-- $1 list id, $2 how many rejected rows to return (all are counted). Returns the counts, and the rejected
-- rows in order of line as three arrays.
WITH duplicated AS (
    SELECT key, min(line) AS first_line FROM import_rows GROUP BY key HAVING count(*) > 1
), judged AS MATERIALIZED (
    SELECT staged.line, staged.email, staged.key, staged.name, staged.attributes,
           subscribers.id AS subscriber_id,
           CASE
               WHEN staged.line <> duplicated.first_line THEN 'duplicate of line ' || duplicated.first_line
               WHEN subscribers.status = 'blocklisted' THEN 'blocklisted: not imported'
               WHEN suppressions.reason IS NOT NULL
                   THEN 'suppressed (' || replace(suppressions.reason, '_', ' ') || '): not imported'
               WHEN subscriptions.status = 'unsubscribed'
                   THEN 'unsubscribed from this list: not subscribed again'
           END AS refusal,
           staged.name <> subscribers.name
               OR subscribers.attributes || staged.attributes <> subscribers.attributes AS changed,
           coalesce(subscriptions.status = 'confirmed', false) AS confirmed
    FROM import_rows AS staged
    LEFT JOIN duplicated ON duplicated.key = staged.key
    LEFT JOIN subscribers ON lower(subscribers.email) = staged.key
    LEFT JOIN suppressions_stopping('newsletter') AS suppressions ON suppressions.address = staged.key
    LEFT JOIN subscriptions ON subscriptions.subscriber_id = subscribers.id AND subscriptions.list_id = $1
), inserted AS (
    INSERT INTO subscribers (email, name, attributes)
    SELECT email, coalesce(name, ''), coalesce(attributes, '{}') FROM judged
    WHERE refusal IS NULL AND subscriber_id IS NULL
    ORDER BY key COLLATE "C"
    RETURNING id
), updated AS (
    UPDATE subscribers SET
        name = coalesce(judged.name, subscribers.name),
        attributes = subscribers.attributes || coalesce(judged.attributes, '{}'),
        updated_at = now()
    FROM judged
    WHERE subscribers.id = judged.subscriber_id AND judged.refusal IS NULL AND judged.changed
), subscribed AS (
    INSERT INTO subscriptions (subscriber_id, list_id, status, confirmed_at, source)
    SELECT id, $1, 'confirmed', now(), 'import' FROM inserted
    RETURNING 1
), confirmed AS (
    INSERT INTO subscriptions AS existing (subscriber_id, list_id, status, confirmed_at, source)
    SELECT subscriber_id, $1, 'confirmed', now(), 'import' FROM judged
    WHERE refusal IS NULL AND subscriber_id IS NOT NULL AND NOT confirmed
    ON CONFLICT (subscriber_id, list_id) DO UPDATE SET
        status = 'confirmed', confirmed_at = now(), source = 'import', updated_at = now()
    WHERE existing.status = 'pending'
    RETURNING 1
), counted AS (
    SELECT count(*) FILTER (WHERE refusal IS NULL AND subscriber_id IS NOT NULL) AS updated,
           count(*) FILTER (WHERE refusal IS NOT NULL) AS rejected
    FROM judged
), rejected AS (
    SELECT line, email, refusal FROM judged WHERE refusal IS NOT NULL ORDER BY line LIMIT $2
)
SELECT (SELECT count(*) FROM subscribed) AS inserted, counted.updated,
       (SELECT count(*) FROM subscribed) + (SELECT count(*) FROM confirmed) AS subscribed, counted.rejected,
       (SELECT coalesce(array_agg(line ORDER BY line), '{}') FROM rejected) AS lines,
       (SELECT coalesce(array_agg(email ORDER BY line), '{}') FROM rejected) AS emails,
       (SELECT coalesce(array_agg(refusal ORDER BY line), '{}') FROM rejected) AS reasons
FROM counted;

-- name: export_subscribers
-- One row per subscription, and one for each person without any; $1 list id, $2 status (the subscriber's,
-- active or blocklisted, or the subscription's), each NULL for all. Times in UTC, ISO 8601. The cells people
-- typed are neutralised for spreadsheets (csv_cell, migration 0012); the import takes that off again.
SELECT csv_cell(subscribers.email), csv_cell(subscribers.name), csv_cell(subscribers.attributes::text),
       subscribers.status, lists.slug,
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
