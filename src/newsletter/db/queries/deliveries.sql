-- name: claim_deliveries
-- Takes up to $1 deliveries under a lease of $2 seconds: first those due from the claim index (confirmations,
-- retries, test copies), SKIP LOCKED so any number of workers claim side by side; then fresh deliveries of the
-- oldest sending issue, in id order behind its cursor, which moves in the same statement (claims of fresh rows
-- take turns on the issue row for the few milliseconds this statement lasts, so no row lock is needed to read
-- them: the UPDATE locks each, and skips one changed meanwhile). Each claim counts as an attempt. Whether the
-- person may still be mailed (suppression list, subscription, subscriber status) is read here, just before
-- sending; what the rows share (their issue, their list) is joined once, not looked up for each row.
WITH due AS (
    SELECT id FROM deliveries
    WHERE status = 'queued' AND next_attempt_at IS NOT NULL AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), wanted AS (
    SELECT $1 - count(*) AS n FROM due
), issue AS (
    -- A window of ids behind the cursor, twice the batch: an issue's deliveries have consecutive ids unless
    -- other emails were queued during its fan-out. Bounded, the scan below costs the same whatever the
    -- planner believes of the table (just after a fan-out its statistics still describe an empty table).
    SELECT issues.id, issues.claimed_through,
           least(issues.last_delivery_id, issues.claimed_through + 2 * wanted.n) AS window_end
    FROM issues, wanted
    WHERE issues.status = 'sending' AND issues.claimed_through < issues.last_delivery_id AND wanted.n > 0
    ORDER BY issues.id
    LIMIT 1
    FOR UPDATE OF issues
), fresh AS (
    -- The bounds as scalar subqueries, so that they bound the primary key's range scan (as a join they would
    -- only filter it).
    SELECT d.id FROM deliveries AS d
    WHERE d.id > (SELECT claimed_through FROM issue) AND d.id <= (SELECT window_end FROM issue)
      AND d.issue_id = (SELECT id FROM issue) AND d.status = 'queued' AND d.next_attempt_at IS NULL
    ORDER BY d.id
    LIMIT (SELECT n FROM wanted)
), advanced AS (
    -- Fewer rows than asked for: the window holds no fresh delivery of the issue past them.
    UPDATE issues
    SET claimed_through = CASE WHEN (SELECT count(*) FROM fresh) < wanted.n THEN issue.window_end
                               ELSE (SELECT max(id) FROM fresh) END
    FROM issue, wanted
    WHERE issues.id = issue.id
), picked AS (
    SELECT id FROM due UNION ALL SELECT id FROM fresh
), claimed AS (
    UPDATE deliveries AS d
    SET status = 'sending', attempts = d.attempts + 1, lease_until = now() + make_interval(secs => $2),
        updated_at = now()
    -- An array of ids, not a join: joined, the planner hashes the whole table (a scan of every delivery per
    -- claim).
    WHERE d.id = ANY (ARRAY(SELECT id FROM picked)) AND d.status = 'queued'
    RETURNING d.id, d.kind, d.issue_id, d.subscriber_id, d.list_id, d.recipient, d.attempts, d.request_id,
              d.traceparent, d.created_at, d.next_attempt_at, d.step_id
)
SELECT claimed.id, claimed.kind, claimed.issue_id, claimed.subscriber_id, claimed.list_id, claimed.recipient,
       claimed.attempts, claimed.step_id,
       coalesce(claimed.request_id, issues.request_id) AS request_id,
       coalesce(claimed.traceparent, issues.traceparent) AS traceparent,
       extract(epoch FROM now() - claimed.created_at)::float8 AS age_seconds,
       -- A newsletter delivery due again (a retry, a reclaimed lease) may belong to an issue paused or
       -- cancelled since; fresh ones are only claimed from sending issues.
       CASE WHEN claimed.kind = 'newsletter' AND claimed.next_attempt_at IS NOT NULL THEN issues.status END
           AS issue_status,
       lists.name AS list_name,
       lists.slug AS list_slug,
       -- A confirmation is wanted while its subscription waits for it: pending, or left before the person
       -- asked again.
       CASE WHEN claimed.kind = 'confirmation' THEN
           EXISTS (SELECT 1 FROM subscriptions AS s
                   WHERE s.subscriber_id = claimed.subscriber_id AND s.list_id = claimed.list_id
                     AND (s.status = 'pending'
                          OR (s.status = 'unsubscribed' AND s.unsubscribed_at < claimed.created_at)))
       WHEN claimed.kind = 'newsletter' THEN
           EXISTS (SELECT 1 FROM subscriptions AS s
                   JOIN issue_lists AS il ON il.list_id = s.list_id AND il.issue_id = claimed.issue_id
                   JOIN subscribers AS p ON p.id = s.subscriber_id AND p.status = 'active'
                   WHERE s.subscriber_id = claimed.subscriber_id AND s.status = 'confirmed')
       -- A sequence's step: while the person is still on the list (leaving the sequence means leaving it,
       -- being suppressed or blocklisted, each of which is read here too).
       WHEN claimed.kind = 'sequence' THEN
           EXISTS (SELECT 1 FROM subscriptions AS s
                   JOIN subscribers AS p ON p.id = s.subscriber_id AND p.status = 'active'
                   WHERE s.subscriber_id = claimed.subscriber_id AND s.list_id = claimed.list_id
                     AND s.status = 'confirmed')
       ELSE true END AS still_wanted,
       -- The mailability rule (migration 0013): a confirmation asked for after unsubscribing from everything
       -- is a new, explicit request.
       EXISTS (SELECT FROM suppressions_stopping(claimed.kind) AS s WHERE s.address = lower(claimed.recipient))
           AS suppressed
FROM claimed
LEFT JOIN issues ON issues.id = claimed.issue_id
LEFT JOIN lists ON lists.id = claimed.list_id;

-- name: reclaim_expired_leases
-- A worker that died (or lost the database) holds leases that will never be settled: put them back.
UPDATE deliveries
SET status = 'queued', lease_until = NULL, reclaimed = reclaimed + 1, next_attempt_at = now(), updated_at = now()
WHERE status = 'sending' AND lease_until < now()
RETURNING id;

-- name: insert_confirmation_tokens
-- $1 hashes, $2 subscriber ids, $3 list ids, $4 validity in hours.
INSERT INTO confirmation_tokens (token_hash, subscriber_id, list_id, expires_at)
SELECT token.hash, token.subscriber_id, token.list_id, now() + make_interval(secs => $4::float8 * 3600)
FROM unnest($1::bytea[], $2::bigint[], $3::bigint[]) AS token(hash, subscriber_id, list_id)
JOIN subscriptions USING (subscriber_id, list_id);

-- name: record_outcomes
-- Settles a batch in one statement and moves the issues' progress counters with it. A row is only settled by
-- the attempt that claimed it: a worker whose lease expired and was reclaimed cannot overwrite the newer
-- attempt's outcome. A newsletter delivery to be retried whose issue was paused while it was being sent is
-- parked as the pause parks the others (at the end of time, until the issue resumes); one whose issue was
-- cancelled meanwhile is cancelled. The issue becomes 'sent' when its last delivery settles, also when it
-- was paused while its last deliveries were being sent: nothing is left to hold. The issue's status is read
-- under the lock the counters take anyway, so a pause or resume running at the same time is waited for and
-- seen (read from the snapshot, a resume committing meanwhile would leave a retry parked for good). A retry
-- that was not tried (its batch ran out of time, or it was claimed while its issue was paused) gives its
-- attempt back.
-- $1 ids, $2 attempts, $3 statuses, $4 errors, $5 provider ids, $6 retry delays in seconds, $7 whether each
-- was tried.
WITH outcome AS (
    SELECT outcome.*,
           CASE WHEN outcome.status = 'queued' THEN
               (SELECT issues.status FROM deliveries JOIN issues ON issues.id = deliveries.issue_id
                WHERE deliveries.id = outcome.id AND deliveries.kind = 'newsletter'
                FOR NO KEY UPDATE OF issues) END AS halted
    FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::boolean[])
         AS outcome(id, attempt, status, error, provider_id, delay, tried)
), settled AS (
    UPDATE deliveries AS d
    SET status = CASE WHEN outcome.halted = 'cancelled' THEN 'cancelled' ELSE outcome.status END,
        attempts = CASE WHEN outcome.tried THEN d.attempts ELSE d.attempts - 1 END,
        last_error = CASE WHEN outcome.halted = 'cancelled' THEN 'issue cancelled (last attempt: '
                          || coalesce(outcome.error, '') || ')' ELSE outcome.error END,
        provider_message_id = coalesce(outcome.provider_id, d.provider_message_id),
        next_attempt_at = CASE WHEN outcome.halted = 'paused' THEN 'infinity'
                               WHEN outcome.status = 'queued' THEN now() + make_interval(secs => outcome.delay)
                               ELSE d.next_attempt_at END,
        sent_at = CASE WHEN outcome.status = 'sent' THEN now() ELSE d.sent_at END,
        lease_until = NULL,
        updated_at = now()
    FROM outcome
    WHERE d.id = outcome.id AND d.attempts = outcome.attempt AND d.status = 'sending'
    RETURNING d.id, d.issue_id, d.kind, d.status, d.subscriber_id, d.list_id, d.recipient, d.last_error,
              d.step_id
), reported AS (
    -- The event record (migration 0014): an email handed over, or given up.
    INSERT INTO events (type, address, data)
    SELECT 'delivery.' || settled.status, lower(settled.recipient),
           jsonb_strip_nulls(jsonb_build_object(
               'delivery_id', settled.id, 'kind', settled.kind, 'issue_id', settled.issue_id,
               'subscriber_id', settled.subscriber_id, 'list_id', settled.list_id, 'step_id', settled.step_id,
               'email', settled.recipient, 'error', settled.last_error))
    FROM settled
    WHERE settled.status IN ('sent', 'failed')
    ORDER BY settled.id
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
        status = CASE WHEN issues.status IN ('sending', 'paused') AND issues.pending_count = progress.settled
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
-- Due rows from the claim index, plus the fresh rows of sending issues read off their cursors (ids in an
-- issue's range that belong to other emails are counted too: a close bound, read from a few rows).
WITH due AS (
    SELECT count(*) AS depth, min(next_attempt_at) AS oldest
    FROM deliveries WHERE status = 'queued' AND next_attempt_at IS NOT NULL AND next_attempt_at <= now()
), fresh AS (
    SELECT coalesce(sum(last_delivery_id - claimed_through), 0) AS depth, min(started_at) AS oldest
    FROM issues WHERE status = 'sending' AND claimed_through < last_delivery_id
)
SELECT (due.depth + fresh.depth)::bigint AS depth,
       coalesce(extract(epoch FROM now() - least(due.oldest, fresh.oldest)), 0)::float8 AS oldest_age
FROM due, fresh;

-- name: reserve_send_slots
-- Sending rate shared by every worker: reserves $2 messages at $3 per second on transport $1 and returns how
-- many seconds the caller must wait before sending them.
INSERT INTO send_rate AS rate (transport, next_free)
VALUES ($1, now() + make_interval(secs => $2::float8 / $3::float8))
ON CONFLICT (transport) DO UPDATE
SET next_free = greatest(rate.next_free, now()) + make_interval(secs => $2::float8 / $3::float8)
RETURNING greatest(0, extract(epoch FROM next_free - now()) - $2::float8 / $3::float8)::float8 AS wait_seconds;

-- name: any_due
SELECT EXISTS (SELECT 1 FROM deliveries
               WHERE status = 'queued' AND next_attempt_at IS NOT NULL AND next_attempt_at <= now())
    OR EXISTS (SELECT 1 FROM issues WHERE status = 'sending' AND claimed_through < last_delivery_id);

-- name: issue_contents
SELECT id, subject, html, text_body, updated_at FROM issues WHERE id = ANY($1::bigint[]);
