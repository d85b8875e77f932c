-- name: reports_recent
SELECT id, provider, kind, email, delivery_id, detail, occurred_at
FROM delivery_events
WHERE ($1::bigint IS NULL OR id < $1)
ORDER BY id DESC
LIMIT $2;

-- name: reports_record
-- Stores the events not seen before and returns them; a repeat of a known (provider, event id) is skipped.
-- An event that names a delivery is about the address that delivery went to (a bounce report may name the
-- address a message was forwarded to). Times in the future are the reporter's clock, not ours.
-- $1 providers, $2 provider event ids, $3 kinds, $4 addresses, $5 delivery ids, $6 details, $7 times.
INSERT INTO delivery_events (provider, provider_event_id, kind, email, delivery_id, detail, occurred_at)
SELECT event.provider, event.provider_event_id, event.kind, coalesce(delivery.recipient, event.email),
       event.delivery_id, event.detail, least(event.occurred_at, now())
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::timestamptz[])
     AS event(provider, provider_event_id, kind, email, delivery_id, detail, occurred_at)
LEFT JOIN deliveries AS delivery ON delivery.id = event.delivery_id AND delivery.recipient <> 'erased'
ON CONFLICT (provider, provider_event_id) DO NOTHING
RETURNING id, email;

-- name: reports_lock_addresses
-- Serializes the batches that concern one address until they commit, so that two batches arriving together
-- cannot each count one soft bounce too few. Taken after recording and before applying: the statement that
-- applies then sees every event committed before it. Sorted, so two batches never wait for each other.
SELECT count(pg_advisory_xact_lock(1684372339, hashtext(address)))
FROM (SELECT DISTINCT lower(email) AS address FROM unnest($1::text[]) AS email ORDER BY 1) AS addresses;

-- name: reports_apply
-- Applies the events just recorded ($1 their ids). A hard bounce, a complaint, or the soft bounce that makes
-- $2 within $3 days suppresses the address (repeated soft bounces count as a hard bounce) and ends every
-- subscription of that person; a hard bounce or complaint about a known delivery marks that delivery. Soft
-- bounces are counted per message: several reports about one delivery ("delayed", then "delayed" again)
-- count once. A bounce or complaint outranks an earlier unsubscribe from every list, which a new sign-up
-- would lift.
WITH fresh AS (
    SELECT * FROM delivery_events WHERE id = ANY($1::bigint[])
), worn_out AS (
    SELECT DISTINCT ON (lower(fresh.email)) fresh.email, fresh.detail
    FROM fresh
    WHERE fresh.kind = 'soft_bounce'
      AND (SELECT count(DISTINCT coalesce('delivery ' || earlier.delivery_id, 'event ' || earlier.id))
           FROM delivery_events AS earlier
           WHERE lower(earlier.email) = lower(fresh.email) AND earlier.kind = 'soft_bounce'
             AND earlier.occurred_at > now() - make_interval(days => $3::integer)) >= $2::integer
    ORDER BY lower(fresh.email), fresh.occurred_at DESC
), undeliverable AS (
    SELECT email, kind AS reason, detail FROM fresh WHERE kind IN ('hard_bounce', 'complaint')
    UNION ALL
    SELECT email, 'hard_bounce', format('%s soft bounces within %s days, the last: %s', $2::integer,
                                        $3::integer, detail)
    FROM worn_out
), suppressed AS (
    INSERT INTO suppressions AS existing (email, reason, detail)
    SELECT DISTINCT ON (lower(email)) email, reason, left(detail, 1000)
    FROM undeliverable
    ORDER BY lower(email), reason = 'complaint' DESC
    ON CONFLICT ((lower(email))) DO UPDATE SET reason = excluded.reason, detail = excluded.detail
    WHERE existing.reason = 'unsubscribe_all'
    RETURNING 1
), ended AS (
    UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = now(), updated_at = now()
    FROM subscribers
    WHERE subscribers.id = subscriptions.subscriber_id
      AND lower(subscribers.email) IN (SELECT lower(email) FROM undeliverable)
      AND subscriptions.status <> 'unsubscribed'
    RETURNING 1
), marked AS (
    -- Only deliveries that were handed over: one still being sent is settled by its worker.
    UPDATE deliveries
    SET status = CASE WHEN fresh.kind = 'complaint' THEN 'complained' ELSE 'bounced' END, updated_at = now()
    FROM fresh
    WHERE deliveries.id = fresh.delivery_id AND fresh.kind IN ('hard_bounce', 'complaint')
      AND deliveries.status IN ('sent', 'bounced')
    RETURNING 1
), reported AS (
    -- The event record (migration 0014): every bounce and complaint, with the delivery when it is known.
    INSERT INTO events (type, address, data)
    SELECT CASE WHEN fresh.kind = 'complaint' THEN 'delivery.complained' ELSE 'delivery.bounced' END,
           lower(fresh.email),
           jsonb_strip_nulls(jsonb_build_object(
               'delivery_id', fresh.delivery_id, 'email', fresh.email, 'provider', fresh.provider,
               'bounce', CASE fresh.kind WHEN 'hard_bounce' THEN 'hard' WHEN 'soft_bounce' THEN 'soft' END,
               'detail', left(fresh.detail, 1000)))
    FROM fresh
    WHERE fresh.kind IN ('hard_bounce', 'soft_bounce', 'complaint')
    ORDER BY fresh.id
)
SELECT (SELECT count(*) FROM suppressed) AS suppressed, (SELECT count(*) FROM ended) AS unsubscribed,
       (SELECT count(*) FROM marked) AS marked;
