-- name: claim_deliveries
-- Takes up to $1 due deliveries under a lease of $2 seconds. SKIP LOCKED lets any number of workers claim
-- side by side without waiting on each other; each claim counts as an attempt. Whether the person may still
-- be mailed (suppression list, subscription, subscriber status) is read here, just before sending.
WITH due AS (
    SELECT id FROM deliveries
    WHERE status = 'queued' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries AS d
SET status = 'sending', attempts = d.attempts + 1, lease_until = now() + make_interval(secs => $2),
    updated_at = now()
FROM due
WHERE d.id = due.id
RETURNING d.id, d.kind, d.issue_id, d.subscriber_id, d.list_id, d.recipient, d.attempts, d.request_id,
          extract(epoch FROM now() - d.created_at)::float8 AS age_seconds,
          (SELECT name FROM lists WHERE lists.id = d.list_id) AS list_name,
          (SELECT slug FROM lists WHERE lists.id = d.list_id) AS list_slug,
          CASE WHEN d.kind = 'confirmation' THEN
              (SELECT s.status FROM subscriptions AS s
                WHERE s.subscriber_id = d.subscriber_id AND s.list_id = d.list_id) = 'pending'
          WHEN d.kind = 'newsletter' THEN
              EXISTS (SELECT 1 FROM subscriptions AS s
                      JOIN issue_lists AS il ON il.list_id = s.list_id AND il.issue_id = d.issue_id
                      JOIN subscribers AS p ON p.id = s.subscriber_id AND p.status = 'active'
                      WHERE s.subscriber_id = d.subscriber_id AND s.status = 'confirmed')
          ELSE true END AS still_wanted,
          EXISTS (SELECT 1 FROM suppressions
                  WHERE lower(suppressions.email) = lower(d.recipient)
                    -- A confirmation asked for after unsubscribing from everything is a new, explicit request.
                    AND (d.kind <> 'confirmation' OR suppressions.reason <> 'unsubscribe_all')) AS suppressed;

-- name: reclaim_expired_leases
-- A worker that died (or lost the database) holds leases that will never be settled: put them back.
UPDATE deliveries
SET status = 'queued', lease_until = NULL, reclaimed = reclaimed + 1, next_attempt_at = now(), updated_at = now()
WHERE status = 'sending' AND lease_until < now()
RETURNING id;

-- name: insert_confirmation_tokens
-- $1 hashes, $2 subscriber ids, $3 list ids, $4 validity in hours.
INSERT INTO confirmation_tokens (token_hash, subscriber_id, list_id, expires_at)
SELECT token.hash, token.subscriber_id, token.list_id, now() + make_interval(secs => $4 * 3600)
FROM unnest($1::bytea[], $2::bigint[], $3::bigint[]) AS token(hash, subscriber_id, list_id)
JOIN subscriptions USING (subscriber_id, list_id);

-- name: record_outcomes
-- Settles a batch in one statement and moves the issues' progress counters with it. A row is only settled by
-- the attempt that claimed it: a worker whose lease expired and was reclaimed cannot overwrite the newer
-- attempt's outcome. The issue becomes 'sent' when its last delivery settles.
-- $1 ids, $2 attempts, $3 statuses, $4 errors, $5 provider ids, $6 retry delays in seconds.
WITH settled AS (
    UPDATE deliveries AS d
    SET status = outcome.status,
        last_error = outcome.error,
        provider_message_id = coalesce(outcome.provider_id, d.provider_message_id),
        next_attempt_at = CASE WHEN outcome.status = 'queued'
                               THEN now() + make_interval(secs => outcome.delay) ELSE d.next_attempt_at END,
        sent_at = CASE WHEN outcome.status = 'sent' THEN now() ELSE d.sent_at END,
        lease_until = NULL,
        updated_at = now()
    FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::float8[])
         AS outcome(id, attempt, status, error, provider_id, delay)
    WHERE d.id = outcome.id AND d.attempts = outcome.attempt AND d.status = 'sending'
    RETURNING d.issue_id, d.kind, d.status
), progress AS (
    SELECT issue_id,
           count(*) FILTER (WHERE status = 'sent') AS sent,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'suppressed') AS suppressed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE status <> 'queued') AS settled
    FROM settled
    WHERE kind = 'newsletter'
    GROUP BY issue_id
), counted AS (
    UPDATE issues
    SET sent_count = sent_count + progress.sent,
        failed_count = failed_count + progress.failed,
        suppressed_count = suppressed_count + progress.suppressed,
        cancelled_count = cancelled_count + progress.cancelled,
        pending_count = pending_count - progress.settled,
        status = CASE WHEN issues.status = 'sending' AND issues.pending_count = progress.settled
                      THEN 'sent' ELSE issues.status END,
        finished_at = CASE WHEN issues.pending_count = progress.settled THEN now() ELSE issues.finished_at END
    FROM progress
    WHERE issues.id = progress.issue_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM settled) AS settled, (SELECT count(*) FROM counted) AS issues;

-- name: suppress_addresses
INSERT INTO suppressions (email, reason, detail)
SELECT address.email, $3, address.detail
FROM unnest($1::text[], $2::text[]) AS address(email, detail)
ON CONFLICT ((lower(email))) DO NOTHING;

-- name: queue_stats
SELECT count(*) AS depth, coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8 AS oldest_age
FROM deliveries WHERE status = 'queued' AND next_attempt_at <= now();

-- name: reserve_send_slots
-- Sending rate shared by every worker: reserves $2 messages at $3 per second on transport $1 and returns how
-- many seconds the caller must wait before sending them.
INSERT INTO send_rate AS rate (transport, next_free)
VALUES ($1, now() + make_interval(secs => $2::float8 / $3::float8))
ON CONFLICT (transport) DO UPDATE
SET next_free = greatest(rate.next_free, now()) + make_interval(secs => $2::float8 / $3::float8)
RETURNING greatest(0, extract(epoch FROM next_free - now()) - $2::float8 / $3::float8)::float8 AS wait_seconds;

-- name: any_due
SELECT EXISTS (SELECT 1 FROM deliveries WHERE status = 'queued' AND next_attempt_at <= now());

-- name: issue_contents
SELECT id, subject, html, text_body, updated_at FROM issues WHERE id = ANY($1::bigint[]);

-- name: purge_idempotency_keys
DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours';
