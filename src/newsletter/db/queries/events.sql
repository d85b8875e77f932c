-- name: events_page
-- The events after the cursor $1 (an event id; NULL from the start), of the types $2 (NULL: every type), at
-- most $3, in the order of the transactions that wrote them and only those of transactions that have ended
-- before every one still running began (migration 0014): read again later, this page is the same and nothing
-- appears before its end. A cursor whose event is gone (trimmed) reads on from the first event above its id.
WITH horizon AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin
), cursor AS (
    SELECT coalesce(found.txid, (SELECT min(txid) FROM events WHERE id > $1), '0'::xid8) AS txid,
           coalesce(found.id, 0) AS id,
           CASE WHEN found.id IS NULL THEN coalesce($1, 0) ELSE 0 END AS floor
    FROM (SELECT NULL) AS one LEFT JOIN events AS found ON found.id = $1
)
SELECT events.id, events.type, events.created_at, events.data
FROM events, horizon, cursor
WHERE events.txid < horizon.xmin
  AND (events.txid, events.id) > (cursor.txid, cursor.id)
  AND events.id > cursor.floor
  AND ($2::text[] IS NULL OR events.type = ANY ($2::text[]))
ORDER BY events.txid, events.id
LIMIT $3;

-- name: events_recent
-- The latest events, newest first, before the event $1 (NULL: the newest), of the types $2 (NULL: every type),
-- at most $3: what an operator browses. Pages follow ids, not commit order (events_page is for integrators).
SELECT id, type, created_at, address, data
FROM events
WHERE ($1::bigint IS NULL OR id < $1) AND ($2::text[] IS NULL OR type = ANY ($2::text[]))
ORDER BY id DESC
LIMIT $3;

-- name: events_trim
-- Forgets the events older than $1 days, at most $2 of them (housekeeping repeats it).
DELETE FROM events
WHERE id IN (SELECT id FROM events WHERE created_at < now() - make_interval(days => $1) LIMIT $2);

-- name: events_written
SELECT pg_sequence_last_value('events_id_seq');
