-- name: token_insert
INSERT INTO api_tokens (name, token_hash, scope) VALUES ($1, $2, $3) RETURNING id;

-- name: token_lookup
SELECT id, name, scope FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL;

-- name: idempotency_wait_at_most
-- How long (ms, $1) a repeat of a request waits for the first to finish, for the rest of the transaction.
SELECT set_config('lock_timeout', $1, true);

-- name: idempotency_wait_as_usual
SET LOCAL lock_timeout = DEFAULT;

-- name: idempotency_expire
DELETE FROM idempotency_keys WHERE token_id = $1 AND key = $2 AND created_at < now() - interval '24 hours';

-- name: idempotency_claim
-- Waits (up to lock_timeout) while another transaction holds the same key, then either inserts it or not.
INSERT INTO idempotency_keys (token_id, key, fingerprint, response_status, response_body)
VALUES ($1, $2, $3, 0, '')
ON CONFLICT DO NOTHING
RETURNING true;

-- name: idempotency_saved
SELECT fingerprint, response_status, response_body FROM idempotency_keys WHERE token_id = $1 AND key = $2;

-- name: idempotency_store
UPDATE idempotency_keys SET response_status = $3, response_body = $4 WHERE token_id = $1 AND key = $2;

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

-- name: purge_idempotency_keys
DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours';

-- name: hit_rate_limits
SELECT key, hits, wait_seconds AS retry_after FROM hit_rate_limits($1::text[], $2::integer[]);

-- name: exceeded_rate_limits
-- The counters among $1 that have reached their limit ($2) in their current window; counts nothing.
SELECT extract(epoch FROM counter.window_start + make_interval(secs => counter.window_seconds) - now())::float8
       AS retry_after
FROM rate_limits AS counter
JOIN unnest($1::text[], $2::integer[]) AS wanted(key, max_hits) ON wanted.key = counter.key
WHERE counter.hits >= wanted.max_hits
  AND counter.window_start + make_interval(secs => counter.window_seconds) > now();

-- name: purge_rate_limits
DELETE FROM rate_limits WHERE window_start + make_interval(secs => window_seconds) < now();
