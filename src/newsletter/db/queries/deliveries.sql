-- name: claim_deliveries
-- Takes up to $1 due deliveries under a lease of $2 seconds. SKIP LOCKED lets any number of workers claim
-- side by side without waiting on each other; each claim counts as an attempt. The suppression list and the
-- subscription are read here, just before sending.
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
RETURNING d.id, d.kind, d.subscriber_id, d.list_id, d.recipient, d.attempts, d.request_id,
          extract(epoch FROM now() - d.created_at)::float8 AS age_seconds,
          (SELECT name FROM lists WHERE lists.id = d.list_id) AS list_name,
          (SELECT status FROM subscriptions AS s
            WHERE s.subscriber_id = d.subscriber_id AND s.list_id = d.list_id) AS subscription_status,
          EXISTS (SELECT 1 FROM suppressions WHERE lower(suppressions.email) = lower(d.recipient)) AS suppressed;

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
-- Settles a batch in one statement. A row is only settled by the attempt that claimed it: a worker whose
-- lease expired and was reclaimed cannot overwrite the newer attempt's outcome.
-- $1 ids, $2 attempts, $3 statuses, $4 errors, $5 provider ids, $6 retry delays in seconds.
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
WHERE d.id = outcome.id AND d.attempts = outcome.attempt AND d.status = 'sending';

-- name: suppress_addresses
INSERT INTO suppressions (email, reason, detail)
SELECT address.email, $3, address.detail
FROM unnest($1::text[], $2::text[]) AS address(email, detail)
ON CONFLICT ((lower(email))) DO NOTHING;

-- name: queue_stats
SELECT count(*) AS depth, coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)::float8 AS oldest_age
FROM deliveries WHERE status = 'queued' AND next_attempt_at <= now();
