-- name: sequence_create
-- The list locked as a foreign key would: one being deleted meanwhile is waited for, and then not found.
INSERT INTO sequences (list_id, name, status)
SELECT id, $2, $3 FROM lists WHERE id = $1 FOR KEY SHARE
RETURNING id;

-- name: sequences_read
-- $1 a sequence id, or NULL for every sequence. Counts come from the primary key's index of the members.
SELECT sequences.id, sequences.name, sequences.status, sequences.created_at, sequences.updated_at,
       lists.slug AS list,
       (SELECT count(*) FROM sequence_steps WHERE sequence_id = sequences.id) AS steps,
       counts.active, counts.completed, counts."left"
FROM sequences
JOIN lists ON lists.id = sequences.list_id
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE status = 'active') AS active,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status = 'left') AS "left"
    FROM sequence_members WHERE sequence_id = sequences.id
) AS counts
WHERE $1::bigint IS NULL OR sequences.id = $1
ORDER BY sequences.id;

-- name: sequence_update
-- $2 name, $3 status: NULL keeps the value. Returns the id, or nothing for an unknown sequence.
UPDATE sequences
SET name = coalesce($2, name), status = coalesce($3, status), updated_at = now()
WHERE id = $1
RETURNING id;

-- name: sequence_delete
-- Its steps and members go with it; step emails already queued are cancelled when claimed (their step is gone).
DELETE FROM sequences WHERE id = $1 RETURNING id;

-- name: sequence_steps
-- Each step with who got it (emails handed over, and queued or being sent) and who waits for it; $2 only
-- this step (NULL: all).
SELECT step.id, step.position, step.delay_seconds, step.subject, step.markdown, step.html, step.text_body,
       step.created_at, step.updated_at,
       coalesce(ledger.sent, 0) AS sent, coalesce(ledger.queued, 0) AS queued,
       (SELECT count(*) FROM sequence_members AS m
        WHERE m.sequence_id = step.sequence_id AND m.status = 'active' AND m.steps_sent = step.position - 1)
           AS waiting
FROM sequence_steps AS step
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE status = 'sent') AS sent,
           count(*) FILTER (WHERE status IN ('queued', 'sending')) AS queued
    FROM deliveries WHERE step_id = step.id
) AS ledger ON true
WHERE step.sequence_id = $1 AND ($2::bigint IS NULL OR step.id = $2)
ORDER BY step.position;

-- name: step_append
-- The sequence's rows locked first: two steps appended at once take turns for the next position.
WITH locked AS (
    SELECT id FROM sequences WHERE id = $1 FOR NO KEY UPDATE
)
INSERT INTO sequence_steps (sequence_id, position, delay_seconds, subject, markdown, html, text_body)
SELECT locked.id,
       coalesce((SELECT max(position) FROM sequence_steps WHERE sequence_id = locked.id), 0) + 1,
       $2, $3, $4, $5, $6
FROM locked
RETURNING id;

-- name: step_update
UPDATE sequence_steps
SET delay_seconds = $3, subject = $4, markdown = $5, html = $6, text_body = $7, updated_at = now()
WHERE sequence_id = $1 AND id = $2
RETURNING id;

-- name: step_delete
-- Returns the position the step had; `steps_renumber` closes the gap.
DELETE FROM sequence_steps WHERE sequence_id = $1 AND id = $2 RETURNING position;

-- name: steps_renumber
-- After step $2 of sequence $1 is deleted: who got it has one step less behind them, and the steps after
-- it move up (the unique key is checked at the end of the statement).
WITH members AS (
    UPDATE sequence_members SET steps_sent = steps_sent - 1
    WHERE sequence_id = $1 AND steps_sent >= $2
)
UPDATE sequence_steps SET position = position - 1 WHERE sequence_id = $1 AND position > $2;

-- name: sequence_reschedule
SELECT sequence_reschedule($1);

-- name: sequence_members_page
-- $2 only those whose last step sent is this one (0: waiting for the first), $3 only this status,
-- $4 after this subscriber id, $5 at most this many.
SELECT m.subscriber_id AS id, subscribers.email, m.status, m.steps_sent, m.entered_at, m.last_step_at,
       m.next_due_at, m.left_at, m.left_reason
FROM sequence_members AS m
JOIN subscribers ON subscribers.id = m.subscriber_id
WHERE m.sequence_id = $1
  AND ($2::integer IS NULL OR m.steps_sent = $2)
  AND ($3::text IS NULL OR m.status = $3)
  AND m.subscriber_id > coalesce($4::bigint, 0)
ORDER BY m.subscriber_id
LIMIT $5;

-- name: sequence_enroll
-- The list's confirmed people who may be mailed enter the sequence; members (also those who left) stay
-- where they are. Run after `members_lock`, so that people deleted meanwhile are not enrolled.
WITH sequence AS (
    SELECT id, list_id FROM sequences WHERE id = $1
), entered AS (
    INSERT INTO sequence_members (sequence_id, subscriber_id, next_due_at)
    SELECT sequence.id, subscriptions.subscriber_id,
           newsletter_now() + make_interval(secs => first.delay_seconds)
    FROM sequence
    JOIN subscriptions ON subscriptions.list_id = sequence.list_id AND subscriptions.status = 'confirmed'
    JOIN subscribers ON subscribers.id = subscriptions.subscriber_id AND subscribers.status = 'active'
    LEFT JOIN sequence_steps AS first ON first.sequence_id = sequence.id AND first.position = 1
    WHERE NOT EXISTS (SELECT FROM suppressions_stopping('sequence') AS s
                      WHERE s.address = lower(subscribers.email))
    ORDER BY subscriptions.subscriber_id
    ON CONFLICT (sequence_id, subscriber_id) DO NOTHING
    RETURNING sequence_id, subscriber_id
), written AS (
    INSERT INTO events (type, address, data)
    SELECT 'sequence.entered', lower(subscribers.email),
           jsonb_build_object('sequence_id', entered.sequence_id, 'subscriber_id', entered.subscriber_id,
                              'list_id', sequence.list_id, 'email', subscribers.email)
    FROM entered, sequence, subscribers
    WHERE subscribers.id = entered.subscriber_id
    ORDER BY entered.subscriber_id
)
SELECT (SELECT count(*) FROM sequence) AS found, (SELECT count(*) FROM entered) AS entered;

-- name: sequence_sweep
-- Turns up to $1 due steps into deliveries, in one statement, from the index of the next due time: each
-- member's next step is queued (once per person and step: the unique key of the ledger), and the member moves
-- on to the step after it, or completes the sequence. SKIP LOCKED: workers sweep side by side. Members of a
-- paused sequence wait where they are. The clock is read once (`tick`), not for each row.
WITH tick AS MATERIALIZED (
    SELECT newsletter_now() AS now
), due AS (
    SELECT m.ctid AS row, m.sequence_id, m.subscriber_id, m.steps_sent
    FROM sequence_members AS m
    WHERE m.status = 'active' AND m.next_due_at <= (SELECT now FROM tick)
      AND EXISTS (SELECT FROM sequences WHERE sequences.id = m.sequence_id AND sequences.status = 'active')
    ORDER BY m.next_due_at
    LIMIT $1
    FOR NO KEY UPDATE OF m SKIP LOCKED
), work AS (
    SELECT due.row, due.sequence_id, due.subscriber_id, step.id AS step_id, sequences.list_id, subscribers.email,
           next.delay_seconds AS next_delay
    FROM due
    JOIN sequences ON sequences.id = due.sequence_id
    JOIN sequence_steps AS step ON step.sequence_id = due.sequence_id AND step.position = due.steps_sent + 1
    JOIN subscribers ON subscribers.id = due.subscriber_id
    LEFT JOIN sequence_steps AS next
        ON next.sequence_id = due.sequence_id AND next.position = due.steps_sent + 2
), queued AS (
    INSERT INTO deliveries (kind, subscriber_id, list_id, recipient, next_attempt_at, step_id)
    SELECT 'sequence', work.subscriber_id, work.list_id, work.email, now(), work.step_id
    FROM work
    ON CONFLICT (step_id, subscriber_id) WHERE step_id IS NOT NULL DO NOTHING
    RETURNING 1
), moved AS (
    UPDATE sequence_members AS m
    SET steps_sent = m.steps_sent + 1,
        last_step_at = tick.now,
        next_due_at = tick.now + make_interval(secs => work.next_delay),
        status = CASE WHEN work.next_delay IS NULL THEN 'completed' ELSE 'active' END
    FROM work, tick
    -- By the row's address: locked above, it cannot have moved (no index lookup for each member).
    WHERE m.ctid = work.row
), completed AS (
    INSERT INTO events (type, address, data)
    SELECT 'sequence.completed', lower(work.email),
           jsonb_build_object('sequence_id', work.sequence_id, 'subscriber_id', work.subscriber_id,
                              'list_id', work.list_id, 'email', work.email)
    FROM work
    WHERE work.next_delay IS NULL
    ORDER BY work.sequence_id, work.subscriber_id
)
SELECT (SELECT count(*) FROM due) AS due, (SELECT count(*) FROM queued) AS queued;

-- name: members_lock
-- Taken before members are written outside a subscription's statement: deleting subscribers waits for it
-- (migration 0010), and the next statement sees what such a deletion committed.
SELECT pg_advisory_xact_lock_shared(1937072755, 0);

-- name: step_contents
SELECT id, subject, html, text_body, updated_at FROM sequence_steps WHERE id = ANY($1::bigint[]);

-- name: import_enters_sequences
-- For the rest of the transaction, people an import confirms enter the list's sequences (migration 0016).
SELECT set_config('newsletter.import_enters_sequences', 'on', true);
