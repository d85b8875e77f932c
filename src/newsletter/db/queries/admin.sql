-- name: token_insert
INSERT INTO api_tokens (name, token_hash, scope) VALUES ($1, $2, $3) RETURNING id;

-- name: token_lookup
SELECT id, name, scope FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL;

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

-- name: list_all
SELECT lists.*,
       (SELECT count(*) FROM subscriptions WHERE list_id = lists.id AND status = 'confirmed') AS confirmed,
       (SELECT count(*) FROM subscriptions WHERE list_id = lists.id AND status = 'pending') AS pending
FROM lists ORDER BY lists.id;

-- name: list_get
SELECT lists.*,
       (SELECT count(*) FROM subscriptions WHERE list_id = lists.id AND status = 'confirmed') AS confirmed,
       (SELECT count(*) FROM subscriptions WHERE list_id = lists.id AND status = 'pending') AS pending
FROM lists WHERE lists.id = $1;

-- name: list_insert
INSERT INTO lists (slug, name, description, optin, visibility) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (slug) DO NOTHING
RETURNING id;

-- name: list_update
UPDATE lists SET name = coalesce($2, name), description = coalesce($3, description), optin = coalesce($4, optin),
                 visibility = coalesce($5, visibility), updated_at = now()
WHERE id = $1
RETURNING id;

-- name: list_delete
DELETE FROM lists WHERE id = $1 AND slug <> 'default' RETURNING id;

-- name: lists_by_slug
SELECT id, slug FROM lists WHERE slug = ANY($1::text[]);

-- name: subscriber_insert
INSERT INTO subscribers (email, name, attributes, status) VALUES ($1, $2, $3, 'active')
ON CONFLICT ((lower(email))) DO NOTHING
RETURNING id;

-- name: subscriber_by_email
SELECT id FROM subscribers WHERE lower(email) = lower($1);

-- name: subscriptions_add
-- $1 subscriber, $2 list ids, $3 status ('confirmed' or 'pending'), $4 source, $5 request id, $6 traceparent.
WITH added AS (
    INSERT INTO subscriptions (subscriber_id, list_id, status, confirmed_at, source)
    SELECT $1, list_id, $3, CASE WHEN $3 = 'confirmed' THEN now() END, $4
    FROM unnest($2::bigint[]) AS list_id
    ON CONFLICT (subscriber_id, list_id) DO NOTHING
    RETURNING subscriber_id, list_id, status
), queued AS (
    INSERT INTO deliveries (kind, subscriber_id, list_id, recipient, request_id, traceparent)
    SELECT 'confirmation', added.subscriber_id, added.list_id, subscribers.email, $5, $6
    FROM added JOIN subscribers ON subscribers.id = added.subscriber_id
    WHERE added.status = 'pending'
      AND NOT EXISTS (SELECT 1 FROM suppressions WHERE lower(suppressions.email) = lower(subscribers.email)
                                                  AND suppressions.reason <> 'unsubscribe_all')
    RETURNING 1
)
SELECT (SELECT count(*) FROM added) AS added, (SELECT count(*) FROM queued) AS queued,
       CASE WHEN (SELECT count(*) FROM queued) > 0 THEN pg_notify('newsletter_deliveries', '') END;

-- name: subscriber_get
SELECT subscribers.*,
       coalesce(
           (SELECT json_agg(json_build_object(
                'list', lists.slug, 'status', s.status, 'created_at', s.created_at,
                'confirmed_at', s.confirmed_at, 'unsubscribed_at', s.unsubscribed_at, 'source', s.source,
                'signup_ip', host(s.signup_ip), 'signup_user_agent', s.signup_user_agent,
                'confirm_ip', host(s.confirm_ip), 'confirm_user_agent', s.confirm_user_agent
            ) ORDER BY lists.slug)
            FROM subscriptions AS s JOIN lists ON lists.id = s.list_id
            WHERE s.subscriber_id = subscribers.id),
           '[]'::json) AS subscriptions
FROM subscribers WHERE subscribers.id = $1;

-- name: subscriber_page
-- Keyset pagination by id; $1 cursor (last id seen), $2 list slug, $3 status, $4 search, $5 limit.
SELECT subscribers.id, subscribers.email, subscribers.name, subscribers.status, subscribers.attributes,
       subscribers.created_at, subscribers.updated_at
FROM subscribers
WHERE ($1::bigint IS NULL OR subscribers.id > $1)
  AND ($3::text IS NULL OR subscribers.status = $3
       OR EXISTS (SELECT 1 FROM subscriptions AS s JOIN lists AS l ON l.id = s.list_id
                  WHERE s.subscriber_id = subscribers.id AND s.status = $3
                    AND ($2::text IS NULL OR l.slug = $2)))
  AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM subscriptions AS s JOIN lists AS l ON l.id = s.list_id
                                   WHERE s.subscriber_id = subscribers.id AND l.slug = $2))
  AND ($4::text IS NULL OR subscribers.email ILIKE '%' || $4 || '%' OR subscribers.name ILIKE '%' || $4 || '%')
ORDER BY subscribers.id
LIMIT $5;

-- name: subscriber_update
UPDATE subscribers
SET name = coalesce($2, name), attributes = coalesce($3, attributes), status = coalesce($4, status),
    updated_at = now()
WHERE id = $1
RETURNING id;
