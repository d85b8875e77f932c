-- name: issue_failed_suppressed
-- An issue's failed deliveries whose address is suppressed now (a refusal suppresses the address it names).
SELECT count(*)
FROM deliveries
WHERE issue_id = $1 AND kind = 'newsletter' AND status = 'failed'
  AND EXISTS (SELECT FROM suppressions_stopping('newsletter') AS s WHERE s.address = lower(deliveries.recipient));

-- name: issue_get
SELECT issues.*, coalesce(array_agg(lists.slug ORDER BY lists.slug) FILTER (WHERE lists.slug IS NOT NULL), '{}')
       AS lists
FROM issues
LEFT JOIN issue_lists ON issue_lists.issue_id = issues.id
LEFT JOIN lists ON lists.id = issue_lists.list_id
WHERE issues.id = $1
GROUP BY issues.id;

-- name: issue_list_page
SELECT issues.*, coalesce(array_agg(lists.slug ORDER BY lists.slug) FILTER (WHERE lists.slug IS NOT NULL), '{}')
       AS lists
FROM issues
LEFT JOIN issue_lists ON issue_lists.issue_id = issues.id
LEFT JOIN lists ON lists.id = issue_lists.list_id
WHERE ($1::bigint IS NULL OR issues.id < $1) AND ($2::text IS NULL OR issues.status = $2)
GROUP BY issues.id
ORDER BY issues.id DESC
LIMIT $3;

-- name: issue_insert
INSERT INTO issues (subject, markdown, html, text_body) VALUES ($1, $2, $3, $4) RETURNING id;

-- name: issue_update
UPDATE issues SET subject = $2, markdown = $3, html = $4, text_body = $5, updated_at = now()
WHERE id = $1 AND status = 'draft'
RETURNING id;

-- name: issue_set_segment
-- $2 the segment (NULL: none); no row when it does not exist.
UPDATE issues SET segment_id = $2, updated_at = now()
WHERE id = $1 AND ($2::bigint IS NULL OR EXISTS (SELECT FROM segments WHERE id = $2))
RETURNING id;

-- name: issue_set_lists
-- Replaces the target lists; returns the slugs that exist so the caller can tell unknown ones. The statement's
-- parts share one snapshot, so the insert cannot see what the delete removes: the delete keeps the lists that
-- stay, and the insert skips them.
WITH wanted AS (
    SELECT id, slug FROM lists WHERE slug = ANY($2::text[])
), cleared AS (
    DELETE FROM issue_lists WHERE issue_id = $1 AND list_id NOT IN (SELECT id FROM wanted)
), added AS (
    INSERT INTO issue_lists (issue_id, list_id)
    SELECT $1, id FROM wanted
    ON CONFLICT DO NOTHING
)
SELECT slug FROM wanted;

-- name: issue_lock
SELECT id, status, send_at FROM issues WHERE id = $1 FOR UPDATE;

-- name: issue_schedule
UPDATE issues SET status = 'scheduled', send_at = $2, updated_at = now() WHERE id = $1;

-- name: issue_fan_out
-- Creates every delivery of an issue in one statement: each person once, however many target lists they are
-- confirmed in; only active subscribers who are not suppressed. The GROUP BY makes each person one row and the
-- issue row is locked by the caller, so no ON CONFLICT is needed (its speculative insertion would double the
-- cost); the unique index would still refuse a second copy. The rows carry no next_attempt_at: workers take
-- them in id order through the issue's cursor, not from the claim index, and no request id: they share the
-- issue's. No RETURNING either: a million returned rows cost more than the insert's indexes; the count comes
-- from the command tag and the ids' range from the sequence (see issue_started).
-- $1 issue, $2 its target lists; its segment, if it has one, fills the segment slot below (services/
-- audience/segments.py), with its values from $3 on.
WITH eligible AS (
    SELECT subscriptions.subscriber_id, min(subscriptions.list_id) AS list_id
    FROM subscriptions
    WHERE subscriptions.list_id = ANY($2::bigint[]) AND subscriptions.status = 'confirmed'
    GROUP BY subscriptions.subscriber_id
)
INSERT INTO deliveries (kind, issue_id, subscriber_id, list_id, recipient, next_attempt_at)
SELECT 'newsletter', $1, subscribers.id, eligible.list_id, subscribers.email, NULL
FROM eligible
JOIN subscribers ON subscribers.id = eligible.subscriber_id AND subscribers.status = 'active'
WHERE NOT EXISTS (SELECT FROM suppressions_stopping('newsletter') AS s WHERE s.address = lower(subscribers.email))
  AND /* segment */ true;

-- name: fan_out_prepare
-- Just before a fan-out, in its transaction: a floor for its ids (this session draws them after this one); the
-- target lists, passed to the fan-out as values so that the planner sees how many people they hold (it then
-- streams both tables in key order: no hash of a million rows); and a plan made for these values each time,
-- never a generic one.
SELECT nextval(pg_get_serial_sequence('deliveries', 'id')) AS floor,
       array(SELECT list_id FROM issue_lists WHERE issue_id = $1) AS lists,
       (SELECT segments.expression FROM issues JOIN segments ON segments.id = issues.segment_id
        WHERE issues.id = $1) AS segment,
       set_config('plan_cache_mode', 'force_custom_plan', true) AS plan_cache_mode;

-- name: issue_started
-- After the fan-out, in its transaction: $2 deliveries created with ids in ($3, currval] (currval is the last id
-- this session drew, the fan-out's highest), the counters set, the request id $4 and trace context $5 kept
-- for the deliveries, the segment's expression $6 kept as it was sent, sleeping workers woken.
WITH started AS (
    UPDATE issues
    SET status = CASE WHEN $2 = 0 THEN 'sent' ELSE 'sending' END,
        started_at = now(),
        finished_at = CASE WHEN $2 = 0 THEN now() END,
        total_count = $2,
        pending_count = $2,
        first_delivery_id = $3 + 1,
        last_delivery_id = currval(pg_get_serial_sequence('deliveries', 'id')),
        claimed_through = $3,
        request_id = $4,
        traceparent = $5,
        segment_expression = $6,
        updated_at = now()
    WHERE id = $1
    RETURNING 1
)
SELECT pg_notify('newsletter_deliveries', '') FROM started;

-- name: issues_due
-- Scheduled issues whose time has come; SKIP LOCKED so that one worker starts each.
SELECT id FROM issues WHERE status = 'scheduled' AND send_at <= now() ORDER BY send_at FOR UPDATE SKIP LOCKED;

-- name: issue_pause
-- Fresh deliveries wait behind the issue's cursor, which workers only follow while the issue is sending. The
-- ones waiting to be retried are parked at the end of time, where no claim reaches them, until it resumes.
WITH paused AS (
    UPDATE issues SET status = 'paused', updated_at = now()
    WHERE id = $1 AND status = 'sending'
    RETURNING id, first_delivery_id, last_delivery_id
), parked AS (
    UPDATE deliveries SET next_attempt_at = 'infinity', updated_at = now()
    FROM paused
    WHERE deliveries.id BETWEEN paused.first_delivery_id AND paused.last_delivery_id
      AND deliveries.issue_id = paused.id AND deliveries.status = 'queued' AND deliveries.next_attempt_at IS NOT NULL
    RETURNING 1
)
SELECT (SELECT count(*) FROM paused) AS changed, (SELECT count(*) FROM parked) AS parked;

-- name: issue_resume
-- An issue with nothing left to send (its last deliveries settled while it was paused) is sent.
WITH resumed AS (
    UPDATE issues
    SET status = CASE WHEN pending_count = 0 THEN 'sent' ELSE 'sending' END,
        finished_at = CASE WHEN pending_count = 0 THEN coalesce(finished_at, now()) END,
        updated_at = now()
    WHERE id = $1 AND status = 'paused'
    RETURNING id, first_delivery_id, last_delivery_id
), unparked AS (
    UPDATE deliveries SET next_attempt_at = now(), updated_at = now()
    FROM resumed
    WHERE deliveries.id BETWEEN resumed.first_delivery_id AND resumed.last_delivery_id
      AND deliveries.issue_id = resumed.id AND deliveries.status = 'queued' AND deliveries.next_attempt_at = 'infinity'
    RETURNING 1
)
SELECT (SELECT count(*) FROM resumed) AS changed, pg_notify('newsletter_deliveries', '');

-- name: issue_cancel
-- Deliveries still waiting are cancelled; the ones being sent at this moment finish and are counted.
WITH target AS (
    SELECT id, first_delivery_id, last_delivery_id FROM issues
    WHERE id = $1 AND status IN ('draft', 'scheduled', 'sending', 'paused')
), cancelled AS (
    UPDATE deliveries SET status = 'cancelled', last_error = 'issue cancelled', updated_at = now()
    FROM target
    WHERE deliveries.id BETWEEN target.first_delivery_id AND target.last_delivery_id
      AND deliveries.issue_id = target.id AND deliveries.status = 'queued' AND deliveries.kind = 'newsletter'
    RETURNING 1
), tally AS (
    SELECT count(*) AS n FROM cancelled
)
UPDATE issues
SET status = 'cancelled',
    cancelled_count = cancelled_count + tally.n,
    pending_count = pending_count - tally.n,
    finished_at = CASE WHEN pending_count - tally.n = 0 THEN now() ELSE finished_at END,
    updated_at = now()
FROM target, tally
WHERE issues.id = target.id
RETURNING issues.id;

-- name: issue_retry_failed
-- Failed deliveries go back to the claim index, due now, with a fresh attempt budget; parked until the issue
-- resumes when it is paused.
WITH retried AS (
    UPDATE deliveries
    SET status = 'queued', attempts = 0, last_error = NULL, updated_at = now(),
        next_attempt_at = CASE WHEN (SELECT status FROM issues WHERE id = $1) = 'paused'
                               THEN 'infinity'::timestamptz ELSE now() END
    WHERE issue_id = $1 AND kind = 'newsletter' AND status = 'failed'
    RETURNING 1
), counted AS (
    UPDATE issues
    SET failed_count = failed_count - (SELECT count(*) FROM retried),
        pending_count = pending_count + (SELECT count(*) FROM retried),
        status = CASE WHEN status = 'sent' AND (SELECT count(*) FROM retried) > 0 THEN 'sending' ELSE status END,
        finished_at = CASE WHEN (SELECT count(*) FROM retried) > 0 THEN NULL ELSE finished_at END,
        updated_at = now()
    WHERE id = $1 AND status IN ('sending', 'paused', 'sent')
    RETURNING 1
)
SELECT (SELECT count(*) FROM retried) AS retried, pg_notify('newsletter_deliveries', '');

-- name: issue_test_send
-- Test copies to given addresses: ledger rows of kind 'test', outside the issue's counts.
WITH created AS (
    INSERT INTO deliveries (kind, issue_id, recipient, request_id, traceparent)
    SELECT 'test', $1, address, $3, $4 FROM unnest($2::text[]) AS address
    RETURNING id
)
SELECT count(*) AS queued, pg_notify('newsletter_deliveries', '') FROM created;

-- name: issue_deliveries_page
-- The ledger of one issue in id order: its newsletter deliveries through the id range the fan-out wrote (the
-- primary key), then its test copies. $2 status or NULL, $3 the last id seen or NULL, $4 page size.
WITH issue AS (
    SELECT first_delivery_id, last_delivery_id FROM issues WHERE id = $1
)
SELECT * FROM (
    (SELECT d.id, d.kind, d.recipient, d.status, d.attempts, d.last_error, d.provider_message_id, d.reclaimed,
            d.created_at, d.updated_at, d.sent_at, d.next_attempt_at
     FROM deliveries AS d, issue
     WHERE d.id BETWEEN greatest(issue.first_delivery_id, coalesce($3::bigint, 0) + 1) AND issue.last_delivery_id
       AND d.issue_id = $1 AND d.kind = 'newsletter' AND ($2::text IS NULL OR d.status = $2)
     ORDER BY d.id
     LIMIT $4)
    UNION ALL
    (SELECT d.id, d.kind, d.recipient, d.status, d.attempts, d.last_error, d.provider_message_id, d.reclaimed,
            d.created_at, d.updated_at, d.sent_at, d.next_attempt_at
     FROM deliveries AS d
     WHERE d.issue_id = $1 AND d.kind = 'test' AND d.id > coalesce($3::bigint, 0)
       AND ($2::text IS NULL OR d.status = $2)
     ORDER BY d.id
     LIMIT $4)
) AS page
ORDER BY id
LIMIT $4;

-- name: issue_deliveries_attention_page
-- The same for a status that needs attention (failed, bounced, ...), from the partial index that holds only
-- those: no walk through the sent.
SELECT id, kind, recipient, status, attempts, last_error, provider_message_id, reclaimed,
       created_at, updated_at, sent_at, next_attempt_at
FROM deliveries
WHERE issue_id = $1 AND status = $2 AND status IN ('failed', 'bounced', 'complained', 'suppressed', 'cancelled')
  AND id > coalesce($3::bigint, 0)
ORDER BY id
LIMIT $4;
