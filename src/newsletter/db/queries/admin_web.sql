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
-- New subscribers per day over the last $1 days (days without any are filled in by the caller).
SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS added
FROM subscribers
WHERE created_at >= (((now() AT TIME ZONE 'UTC')::date - ($1::integer - 1))::timestamp AT TIME ZONE 'UTC')
GROUP BY 1
ORDER BY 1;

-- name: subscriber_deliveries
-- The latest emails to one person (the ledger's unique index on subscriber_id, issue_id finds them).
SELECT deliveries.id, deliveries.kind, deliveries.issue_id, issues.subject, deliveries.status, deliveries.attempts,
       deliveries.last_error, deliveries.created_at, deliveries.sent_at
FROM deliveries LEFT JOIN issues ON issues.id = deliveries.issue_id
WHERE deliveries.subscriber_id = $1
ORDER BY deliveries.id DESC
LIMIT $2;

-- name: subscriber_unsubscribe_all
UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = now(), updated_at = now()
WHERE subscriber_id = $1 AND status <> 'unsubscribed'
RETURNING list_id;

-- name: events_recent
SELECT id, provider, kind, email, delivery_id, detail, occurred_at
FROM delivery_events
WHERE ($1::bigint IS NULL OR id < $1)
ORDER BY id DESC
LIMIT $2;

-- name: list_names
SELECT id, slug, name FROM lists ORDER BY id;
