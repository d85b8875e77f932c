-- name: admin_user_insert
INSERT INTO admin_users (email, password_hash) VALUES ($1, $2)
ON CONFLICT ((lower(email))) DO NOTHING
RETURNING id;

-- name: admin_user_by_email
SELECT id, email, password_hash FROM admin_users WHERE lower(email) = lower($1);

-- name: admin_user_by_id
SELECT id, email, password_hash FROM admin_users WHERE id = $1;

-- name: admin_user_set_password
UPDATE admin_users SET password_hash = $2, updated_at = now() WHERE id = $1;

-- name: admin_session_start
-- A login: the new session, the user's last login, and the expired sessions of everyone swept away.
WITH swept AS (
    DELETE FROM admin_sessions WHERE expires_at < now()
), logged_in AS (
    UPDATE admin_users SET last_login_at = now() WHERE id = $2
)
INSERT INTO admin_sessions (id_hash, user_id, expires_at, ip, user_agent)
VALUES ($1, $2, now() + make_interval(secs => $3), $4::inet, $5);

-- name: admin_session_get
-- The live session with this id and its user; its last-seen time is written at most once a minute.
WITH found AS (
    SELECT admin_sessions.id_hash, admin_sessions.user_id, admin_sessions.last_seen_at, admin_users.email
    FROM admin_sessions JOIN admin_users ON admin_users.id = admin_sessions.user_id
    WHERE admin_sessions.id_hash = $1 AND admin_sessions.expires_at > now()
), touched AS (
    UPDATE admin_sessions SET last_seen_at = now()
    FROM found
    WHERE admin_sessions.id_hash = found.id_hash AND found.last_seen_at < now() - interval '1 minute'
)
SELECT user_id, email FROM found;

-- name: admin_session_end
DELETE FROM admin_sessions WHERE id_hash = $1;

-- name: admin_sessions_end_others
DELETE FROM admin_sessions WHERE user_id = $1 AND id_hash <> $2;

-- name: token_list
SELECT id, name, scope, created_at, last_used_at, revoked_at FROM api_tokens ORDER BY id DESC;

-- name: token_revoke
UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id;

-- name: dashboard_growth
-- New subscribers per day over the last $1 days, today included. A day before yesterday is counted once and
-- kept in signups_per_day (yesterday may still see the commit of an import that began before midnight). Today
-- and yesterday are counted on each view while a day holds at most $2 rows, and estimated beyond.
WITH days AS (
    SELECT today - back AS day, (today - back)::timestamp AT TIME ZONE 'UTC' AS starts, back <= 1 AS live
    FROM (SELECT (now() AT TIME ZONE 'UTC')::date AS today) AS now,
         generate_series(0, $1::integer - 1) AS back
), counted AS (
    SELECT days.day,
           (SELECT count(*) FROM subscribers
            WHERE created_at >= days.starts AND created_at < days.starts + interval '1 day') AS added
    FROM days
    WHERE NOT days.live AND NOT EXISTS (SELECT FROM signups_per_day WHERE signups_per_day.day = days.day)
), kept AS (
    INSERT INTO signups_per_day (day, added) SELECT day, added FROM counted
    ON CONFLICT (day) DO NOTHING
), live AS (
    SELECT day, starts,
           estimated_rows(format('SELECT FROM subscribers WHERE created_at >= %L AND created_at < %L',
                                 starts, starts + interval '1 day')) AS estimate
    FROM days
    WHERE live
)
SELECT days.day, coalesce(live.estimate > $2, false) AS estimated,
       coalesce(signups_per_day.added, counted.added,
                CASE WHEN live.estimate > $2 THEN live.estimate
                     ELSE (SELECT count(*) FROM subscribers
                           WHERE created_at >= live.starts
                             AND created_at < live.starts + interval '1 day') END)
           AS added
FROM days
LEFT JOIN signups_per_day ON signups_per_day.day = days.day
LEFT JOIN counted ON counted.day = days.day
LEFT JOIN live ON live.day = days.day
ORDER BY days.day;

-- name: subscriber_deliveries
-- The latest emails to one person (the ledger's unique index on subscriber_id, issue_id finds them).
SELECT deliveries.id, deliveries.kind, deliveries.issue_id, issues.subject, deliveries.status, deliveries.attempts,
       deliveries.last_error, deliveries.created_at, deliveries.sent_at
FROM deliveries LEFT JOIN issues ON issues.id = deliveries.issue_id
WHERE deliveries.subscriber_id = $1
ORDER BY deliveries.id DESC
LIMIT $2;

-- name: subscriber_unsubscribe_all
-- An operator ending every subscription of a person, on their request: as when they unsubscribe from every
-- list themselves, the address is suppressed (reason unsubscribe_all) so that no import or other list brings
-- them back; signing up again and confirming lifts it.
WITH ended AS (
    UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = now(), updated_at = now()
    WHERE subscriber_id = $1 AND status <> 'unsubscribed'
    RETURNING list_id
), suppressed AS (
    INSERT INTO suppressions (email, reason, detail)
    SELECT email, 'unsubscribe_all', 'unsubscribed from every list by an operator' FROM subscribers WHERE id = $1
    ON CONFLICT ((lower(email))) DO NOTHING
)
SELECT list_id FROM ended;

-- name: events_recent
SELECT id, provider, kind, email, delivery_id, detail, occurred_at
FROM delivery_events
WHERE ($1::bigint IS NULL OR id < $1)
ORDER BY id DESC
LIMIT $2;

-- name: without_jit
-- For the rest of the transaction: the statements that estimate and count plan costs far above what they do,
-- and JIT compiling them took a third of a second each, to save nothing.
SET LOCAL jit = off;

-- name: list_names
SELECT id, slug, name FROM lists ORDER BY id;

-- name: suppressed_among
-- Which of these addresses are on the suppression list, and why (the ledger marks them: a retry cannot reach
-- them).
SELECT given.recipient, suppressions.reason
FROM unnest($1::text[]) AS given(recipient)
JOIN suppressions ON lower(suppressions.email) = lower(given.recipient);

-- name: issue_failed_suppressed
-- An issue's failed deliveries whose address is suppressed now (a refusal suppresses the address it names).
SELECT count(*)
FROM deliveries
WHERE issue_id = $1 AND kind = 'newsletter' AND status = 'failed'
  AND EXISTS (SELECT 1 FROM suppressions WHERE lower(suppressions.email) = lower(deliveries.recipient));

-- name: lists_counted
-- Every list ($2: only this one, or NULL) with its confirmed and pending subscriptions. Counting costs a read
-- of each counted subscription, so they are counted exactly, the smallest first, up to $1 subscriptions in
-- all; the rest are the planner's estimates (estimated = true).
WITH sized AS (
    SELECT lists.id, wanted.status,
           estimated_rows(format('SELECT FROM subscriptions WHERE list_id = %s AND status = %L',
                                 lists.id, wanted.status)) AS estimate
    FROM lists CROSS JOIN (VALUES ('confirmed'), ('pending')) AS wanted(status)
    WHERE $2::bigint IS NULL OR lists.id = $2
), budgeted AS (
    SELECT id, status, estimate,
           sum(estimate) OVER (ORDER BY estimate, id, status) <= $1 AS exact
    FROM sized
), counted AS (
    SELECT id, status, NOT exact AS estimated,
           CASE WHEN exact
                THEN (SELECT count(*) FROM subscriptions
                      WHERE list_id = budgeted.id AND status = budgeted.status)
                ELSE estimate END AS subscriptions
    FROM budgeted
)
SELECT lists.id, lists.slug, lists.name, lists.description, lists.optin, lists.visibility, lists.created_at,
       lists.updated_at,
       confirmed.subscriptions AS confirmed, confirmed.estimated AS confirmed_estimated,
       pending.subscriptions AS pending, pending.estimated AS pending_estimated
FROM lists
JOIN counted AS confirmed ON confirmed.id = lists.id AND confirmed.status = 'confirmed'
JOIN counted AS pending ON pending.id = lists.id AND pending.status = 'pending'
ORDER BY lists.id;

-- name: admin_subscribers
-- A page of the subscribers page, walking the primary key from the cursor and checking each person: quick
-- when most people pass. $1 last id seen or NULL, $2 subscriber status or NULL, $3 LIKE pattern for the
-- address or the name (matched lowercased) or NULL, $4 page size.
SELECT id, email, name, status, created_at
FROM subscribers
WHERE id > coalesce($1::bigint, 0)
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR lower(email) LIKE lower($3) OR lower(name) LIKE lower($3))
ORDER BY id
LIMIT $4;

-- name: admin_subscribers_in_lists
-- A page of the people subscribed to list $5 (any list when NULL) with status $6 there (any status when
-- NULL), in id order. Each (list, status) range of the (list_id, status, subscriber_id) index is walked in id
-- order up to a page of people who pass the other filters ($2 and $3 as for admin_subscribers), and the walks
-- are merged: a few short walks, however many or few people match. $1 and $4 as for admin_subscribers.
SELECT DISTINCT ON (person.id) person.id, person.email, person.name, person.status, person.created_at
FROM lists
CROSS JOIN unnest(ARRAY['confirmed', 'pending', 'unsubscribed']) AS wanted(status)
CROSS JOIN LATERAL (
    SELECT subscribers.id, subscribers.email, subscribers.name, subscribers.status, subscribers.created_at
    FROM subscriptions JOIN subscribers ON subscribers.id = subscriptions.subscriber_id
    WHERE subscriptions.list_id = lists.id AND subscriptions.status = wanted.status
      AND subscriptions.subscriber_id > coalesce($1::bigint, 0) AND subscribers.id > coalesce($1::bigint, 0)
      AND ($2::text IS NULL OR subscribers.status = $2)
      AND ($3::text IS NULL
           OR lower(subscribers.email) LIKE lower($3) OR lower(subscribers.name) LIKE lower($3))
    ORDER BY subscriptions.subscriber_id
    LIMIT $4
) AS person
WHERE ($5::bigint IS NULL OR lists.id = $5) AND ($6::text IS NULL OR wanted.status = $6)
ORDER BY person.id
LIMIT $4;

-- name: admin_subscribers_beginning
-- The ids of up to $2 people whose address, and up to $2 whose name, begins with $1 (case-insensitive), read
-- from the text_pattern_ops indexes: the range from the beginning to its successor (its last character + 1).
WITH bounds AS (
    SELECT lower($1::text) AS low,
           left(lower($1::text), -1) || chr(CASE ascii(right(lower($1::text), 1))
                                                WHEN 55295 THEN 57344  -- over the UTF-16 surrogates
                                                WHEN 1114111 THEN 1114111
                                                ELSE ascii(right(lower($1::text), 1)) + 1 END) AS high
)
SELECT ARRAY(SELECT id FROM subscribers
             WHERE lower(email) ~>=~ (SELECT low FROM bounds) AND lower(email) ~<~ (SELECT high FROM bounds)
             ORDER BY lower(email) USING ~<~  -- the index's order: a walk that stops at $2
             LIMIT $2) AS by_email,
       ARRAY(SELECT id FROM subscribers
             WHERE lower(name) ~>=~ (SELECT low FROM bounds) AND lower(name) ~<~ (SELECT high FROM bounds)
             ORDER BY lower(name) USING ~<~
             LIMIT $2) AS by_name;

-- name: admin_subscribers_blocklisted
-- The ids of up to $2 blocklisted people after the cursor $1, in id order.
SELECT ARRAY(SELECT id FROM subscribers WHERE status = 'blocklisted' AND id > coalesce($1::bigint, 0)
             ORDER BY id LIMIT $2);

-- name: admin_subscribers_among
-- A page of the people given by id ($3, ascending), checking each: $5 list id or NULL, $6 subscription status
-- (in that list, or in any) or NULL; $1, $2 and $4 as for admin_subscribers.
SELECT id, email, name, status, created_at
FROM subscribers
WHERE id = ANY($3::bigint[])
  AND id > coalesce($1::bigint, 0)
  AND ($2::text IS NULL OR status = $2)
  AND (($5::bigint IS NULL AND $6::text IS NULL)
       OR EXISTS (SELECT 1 FROM subscriptions
                  WHERE subscriber_id = subscribers.id
                    AND ($5::bigint IS NULL OR list_id = $5) AND ($6::text IS NULL OR status = $6)))
ORDER BY id
LIMIT $4;
