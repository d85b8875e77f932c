-- name: webhook_create
INSERT INTO webhook_endpoints (url, description, event_types, active, secret)
VALUES ($1, $2, $3, $4, $5)
RETURNING id;

-- name: webhook_endpoints
-- Every endpoint ($1 NULL) or one, with what waits for it (read off the index of waiting deliveries).
SELECT e.id, e.url, e.description, e.event_types, e.active, e.created_at, e.updated_at, e.failing_since,
       e.retry_at, e.disabled_at, e.disabled_reason,
       waiting.count AS waiting, waiting.oldest AS oldest_waiting
FROM webhook_endpoints AS e,
     LATERAL (SELECT count(*) AS count, min(d.created_at) AS oldest
              FROM webhook_deliveries AS d WHERE d.endpoint_id = e.id AND d.status = 'queued') AS waiting
WHERE $1::bigint IS NULL OR e.id = $1
ORDER BY e.id;

-- name: webhook_update
-- Changes what is given ($2 url, $3 description, $4 types, $5 active: NULL keeps it). Turned on again, an
-- endpoint starts afresh: no failure run, no wait.
UPDATE webhook_endpoints AS e
SET url = coalesce($2, e.url),
    description = coalesce($3, e.description),
    event_types = coalesce($4, e.event_types),
    active = coalesce($5, e.active),
    failing_since = CASE WHEN $5 AND NOT e.active THEN NULL ELSE e.failing_since END,
    retry_at = CASE WHEN $5 AND NOT e.active THEN NULL ELSE e.retry_at END,
    disabled_at = CASE WHEN $5 THEN NULL WHEN $5 = false AND e.active THEN now() ELSE e.disabled_at END,
    disabled_reason = CASE WHEN $5 THEN NULL WHEN $5 = false AND e.active THEN 'turned off by an operator'
                           ELSE e.disabled_reason END,
    updated_at = now()
WHERE e.id = $1
RETURNING e.id;

-- name: webhook_delete
DELETE FROM webhook_endpoints WHERE id = $1 RETURNING id;

-- name: webhook_attempts_page
-- An endpoint's attempts, newest first, before the attempt $2 (NULL: the newest).
SELECT a.id, a.delivery_id, a.event_id, events.type AS event_type, a.attempted_at, a.duration_ms,
       a.status_code, a.error, d.status AS delivery_status, d.attempts AS delivery_attempts
FROM webhook_attempts AS a
LEFT JOIN events ON events.id = a.event_id
LEFT JOIN webhook_deliveries AS d ON d.id = a.delivery_id
WHERE a.endpoint_id = $1 AND ($2::bigint IS NULL OR a.id < $2)
ORDER BY a.id DESC
LIMIT $3;

-- name: webhook_test
-- A test event, to this endpoint alone (whatever types it wants, and even while it is off).
WITH event AS (
    INSERT INTO events (type, data)
    SELECT 'webhook.test', jsonb_build_object('endpoint_id', id, 'message', 'A test event, sent on request.')
    FROM webhook_endpoints WHERE id = $1
    RETURNING id
), delivery AS (
    INSERT INTO webhook_deliveries (endpoint_id, event_id) SELECT $1, id FROM event
    RETURNING id, event_id
), woken AS (
    SELECT pg_notify('newsletter_webhooks', '') FROM delivery
)
SELECT delivery.id AS delivery_id, delivery.event_id, (SELECT count(*) FROM woken) AS woken FROM delivery;

-- name: webhook_replay
-- Sends the endpoint again every event of its types after the event $2 (in the order of the events API),
-- those delivered or given up included. A delivery still waiting or in flight is left as it is.
WITH endpoint AS (
    SELECT id, event_types FROM webhook_endpoints WHERE id = $1
), cursor AS (
    SELECT coalesce(found.txid, '0'::xid8) AS txid, coalesce(found.id, 0) AS id,
           CASE WHEN found.id IS NULL THEN $2 ELSE 0 END AS floor
    FROM (SELECT NULL) AS one LEFT JOIN events AS found ON found.id = $2
), wanted AS (
    SELECT events.id
    FROM events, endpoint, cursor
    WHERE (events.txid, events.id) > (cursor.txid, cursor.id) AND events.id > cursor.floor
      AND events.txid < pg_snapshot_xmin(pg_current_snapshot())
      AND events.type <> 'webhook.test'
      AND (events.type = ANY (endpoint.event_types) OR '*' = ANY (endpoint.event_types))
    ORDER BY events.txid, events.id
), queued AS (
    INSERT INTO webhook_deliveries AS d (endpoint_id, event_id)
    SELECT $1, id FROM wanted
    ON CONFLICT (endpoint_id, event_id) DO UPDATE
    SET status = 'queued', attempts = 0, next_attempt_at = newsletter_now(), created_at = newsletter_now(),
        delivered_at = NULL
    WHERE d.status IN ('delivered', 'failed')
    RETURNING 1
), woken AS (
    SELECT pg_notify('newsletter_webhooks', '') WHERE EXISTS (SELECT FROM queued)
)
SELECT EXISTS (SELECT FROM endpoint) AS found, (SELECT count(*) FROM queued) AS queued,
       (SELECT count(*) FROM woken) AS woken;

-- name: webhook_settle
-- One turn of the dispatcher, in one statement (one round trip, one commit): records a batch of attempts,
-- then claims what there is room for. The slots of the attempts recorded here are free for the claim, and
-- the endpoints they found down or gone get nothing.
--
-- The record. A delivery is only settled by the attempt that claimed it (a worker whose lease expired
-- cannot overwrite a newer attempt). It is delivered, waits $6 seconds for another attempt, or has failed
-- for good: $11 says so (the endpoint answered 410 Gone, the event was trimmed), or the event is older than
-- $9 hours. An endpoint with a success in the batch is well again; one without is failing (since its first
-- failure); one that is down ($8: no answer, a timeout, a 5xx, a 429) gets nothing more until its wait is
-- over; one gone, or failing for $10 hours, is turned off, with an event. $1 ids, $2 attempts, $3 delivered,
-- $4 HTTP statuses, $5 errors, $6 delays, $7 durations (ms), $8 whether the endpoint is down, $9 give-up
-- hours, $10 hours of failure that turn an endpoint off, $11 whether the delivery has failed for good, $12
-- whether the endpoint is gone.
--
-- The claim. Takes due deliveries under a lease of $15 seconds: at most $13 in all and, counting those in
-- flight, at most $14 per endpoint, oldest event first. Endpoints that are off or waiting after a failure are
-- passed over. An endpoint's row is locked (SKIP LOCKED) while this runs, so that two workers claiming at
-- once cannot both fill its share. Each claim counts as an attempt. The picked rows are joined rather than
-- listed in an array: with `id = ANY (array) AND status = 'queued'` the planner could AND the primary key's
-- lookups with a scan of the whole partial index of waiting rows, a cost that grew with the queue (2.6 ms of
-- a 3.6 ms claim with 100,000 waiting, before they were analyzed).
--
-- Every part of a statement sees the database as it was when the statement began: the claim counts the
-- rows settled here out of the `sending` ones itself, and never sees the rows put back to wait (their
-- `next_attempt_at` is ahead anyway). One row comes back even when nothing is claimed (claim columns NULL),
-- with what the record found: how many failed for good, the endpoints turned off.
--
-- The turn commits without waiting for its WAL to reach the disk (`synchronous_commit` off for this
-- transaction only): a turn stays all or nothing, and what a crash of PostgreSQL itself can take back is the
-- last fraction of a second of turns, whose deliveries then go again (at least once, as every webhook may:
-- receivers deduplicate by `webhook-id`). The flush it saves was most of a turn's time (4-5 ms on a plain
-- disk), and a slot waits for a turn: 4,300 -> 5,200 deliveries/s in bench/webhooks.py.
WITH outcome AS (
    SELECT *
    FROM unnest($1::bigint[], $2::integer[], $3::boolean[], $4::integer[], $5::text[], $6::float8[],
                $7::integer[], $8::boolean[], $11::boolean[], $12::boolean[])
         AS outcome(id, attempt, delivered, status_code, error, delay, duration_ms, down, final, gone)
), settled AS (
    UPDATE webhook_deliveries AS d
    SET status = CASE WHEN outcome.delivered THEN 'delivered'
                      WHEN outcome.final OR d.created_at <= newsletter_now() - make_interval(secs => $9::float8 * 3600)
                      THEN 'failed'
                      ELSE 'queued' END,
        next_attempt_at = CASE WHEN outcome.delivered THEN d.next_attempt_at
                               ELSE newsletter_now() + make_interval(secs => outcome.delay) END,
        lease_until = NULL,
        delivered_at = CASE WHEN outcome.delivered THEN now() END,
        last_status = outcome.status_code,
        last_error = outcome.error
    FROM outcome
    WHERE d.id = outcome.id AND d.attempts = outcome.attempt AND d.status = 'sending'
    RETURNING d.id, d.endpoint_id, d.event_id, d.status, outcome.delivered, outcome.status_code, outcome.error,
              outcome.delay, outcome.duration_ms, outcome.down, outcome.gone
), logged AS (
    INSERT INTO webhook_attempts (endpoint_id, delivery_id, event_id, duration_ms, status_code, error)
    SELECT endpoint_id, id, event_id, duration_ms, status_code, error FROM settled ORDER BY id
), per_endpoint AS (
    SELECT settled.endpoint_id,
           count(*) AS settled,
           bool_or(settled.delivered) AS well,
           max(settled.delay) FILTER (WHERE settled.down AND NOT settled.delivered) AS wait,
           bool_or(settled.gone) AS gone
    FROM settled
    GROUP BY settled.endpoint_id
), judged AS (
    SELECT per_endpoint.*, e.url,
           CASE WHEN NOT e.active THEN NULL
                WHEN per_endpoint.gone THEN 'the endpoint answered 410 Gone'
                WHEN NOT per_endpoint.well
                     AND e.failing_since <= newsletter_now() - make_interval(secs => $10::float8 * 3600)
                THEN format('failing for %s hours', $10::float8)
           END AS turned_off
    FROM per_endpoint JOIN webhook_endpoints AS e ON e.id = per_endpoint.endpoint_id
), endpoints AS (
    UPDATE webhook_endpoints AS e
    SET failing_since = CASE WHEN judged.well THEN NULL ELSE coalesce(e.failing_since, newsletter_now()) END,
        retry_at = CASE WHEN judged.wait IS NOT NULL THEN newsletter_now() + make_interval(secs => judged.wait)
                        WHEN judged.well THEN NULL
                        ELSE e.retry_at END,
        active = e.active AND judged.turned_off IS NULL,
        disabled_at = CASE WHEN judged.turned_off IS NOT NULL THEN now() ELSE e.disabled_at END,
        disabled_reason = coalesce(judged.turned_off, e.disabled_reason)
    FROM judged
    WHERE e.id = judged.endpoint_id
      -- An endpoint that was well and stays so is left as it is: no new row version for every batch.
      AND NOT (judged.well AND judged.wait IS NULL AND judged.turned_off IS NULL
               AND e.failing_since IS NULL AND e.retry_at IS NULL)
    RETURNING e.id
), turned_off AS (
    INSERT INTO events (type, data)
    SELECT 'webhook.disabled', jsonb_build_object('endpoint_id', endpoint_id, 'url', url, 'reason', turned_off)
    FROM judged
    WHERE turned_off IS NOT NULL
    ORDER BY endpoint_id
    RETURNING data
), open AS (
    -- (An endpoint whose row the record changes above may be skipped by this lock: it is claimed for at the
    -- next turn.)
    SELECT e.id, coalesce(judged.settled, 0) AS settled
    FROM webhook_endpoints AS e LEFT JOIN judged ON judged.endpoint_id = e.id
    WHERE e.active AND (e.retry_at IS NULL OR e.retry_at <= newsletter_now())
      AND judged.wait IS NULL AND judged.turned_off IS NULL
      AND $13 > 0
    ORDER BY random()
    FOR NO KEY UPDATE OF e SKIP LOCKED
), picked AS (
    SELECT waiting.id
    FROM open,
         LATERAL (SELECT d.id FROM webhook_deliveries AS d
                  WHERE d.endpoint_id = open.id AND d.status = 'queued' AND d.next_attempt_at <= newsletter_now()
                  ORDER BY d.event_id
                  LIMIT greatest(0, $14 + open.settled - (SELECT count(*) FROM webhook_deliveries AS s
                                                          WHERE s.endpoint_id = open.id AND s.status = 'sending'))
                 ) AS waiting
    LIMIT $13
), claimed AS (
    UPDATE webhook_deliveries AS d
    SET status = 'sending', attempts = d.attempts + 1, lease_until = now() + make_interval(secs => $15)
    FROM picked
    WHERE d.id = picked.id AND d.status = 'queued'
    RETURNING d.id, d.endpoint_id, d.event_id, d.attempts
), summary AS (
    SELECT (SELECT count(*) FROM settled WHERE status = 'failed') AS failed,
           (SELECT coalesce(array_agg(data ->> 'url'), '{}') FROM turned_off) AS turned_off,
           -- Read at the commit of this statement's transaction (see above).
           set_config('synchronous_commit', 'off', true) AS durability
)
SELECT summary.failed, summary.turned_off,
       claimed.id, claimed.endpoint_id, claimed.event_id, claimed.attempts, endpoint.url, endpoint.secret,
       events.type, events.created_at, events.data
FROM summary
LEFT JOIN (claimed
           JOIN webhook_endpoints AS endpoint ON endpoint.id = claimed.endpoint_id
           LEFT JOIN events ON events.id = claimed.event_id) ON true
ORDER BY claimed.endpoint_id, claimed.event_id;

-- name: webhook_reclaim
-- A worker that died holds leases that will never be settled: its deliveries wait again.
UPDATE webhook_deliveries
SET status = 'queued', lease_until = NULL, next_attempt_at = newsletter_now()
WHERE status = 'sending' AND lease_until < now()
RETURNING id;

-- name: webhook_give_up
-- What has waited $1 hours without being delivered (its endpoint down or off all that time) has failed.
UPDATE webhook_deliveries
SET status = 'failed', last_error = coalesce(last_error || '; ', '') || format('given up after %s hours', $1)
WHERE status = 'queued' AND created_at <= newsletter_now() - make_interval(secs => $1::float8 * 3600)
RETURNING id;

-- name: webhook_trim
-- Forgets settled deliveries and attempts older than $1 days, at most $2 of each.
WITH deliveries AS (
    DELETE FROM webhook_deliveries
    WHERE id IN (SELECT id FROM webhook_deliveries
                 WHERE created_at < now() - make_interval(days => $1) AND status IN ('delivered', 'failed')
                 LIMIT $2)
    RETURNING 1
), attempts AS (
    DELETE FROM webhook_attempts
    WHERE id IN (SELECT id FROM webhook_attempts WHERE attempted_at < now() - make_interval(days => $1) LIMIT $2)
    RETURNING 1
)
SELECT (SELECT count(*) FROM deliveries) + (SELECT count(*) FROM attempts);

-- name: webhook_backlog
-- Per active endpoint: how many deliveries wait, and the age of the oldest in seconds.
SELECT e.id, count(d.id) AS waiting,
       coalesce(extract(epoch FROM newsletter_now() - min(d.created_at)), 0)::float8 AS oldest_seconds
FROM webhook_endpoints AS e
LEFT JOIN webhook_deliveries AS d ON d.endpoint_id = e.id AND d.status = 'queued'
WHERE e.active
GROUP BY e.id;

-- name: webhooks_due
SELECT EXISTS (
    SELECT FROM webhook_endpoints AS e
    WHERE e.active AND (e.retry_at IS NULL OR e.retry_at <= newsletter_now())
      AND EXISTS (SELECT FROM webhook_deliveries AS d
                  WHERE d.endpoint_id = e.id AND d.status = 'queued' AND d.next_attempt_at <= newsletter_now()));
