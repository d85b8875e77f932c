-- name: subscribe
-- One statement, so one transaction: the subscriber, the subscription and, when a confirmation is due, its
-- email's delivery row are written together or not at all. Nothing is written for an unknown list or one
-- closed to public sign-up (answered alike). (The sign-up limits are counted just before, in a statement of
-- their own: see hit_rate_limits.)
-- Consent: a sign-up never changes a subscription that someone left. An unsubscribed person who signs up again
-- is sent a confirmation and stays unsubscribed until they confirm. A single opt-in list subscribes a new
-- person at once, unless the address is suppressed for an unsubscribe from every list: then it asks them to
-- confirm, as a double opt-in list does.
-- $1 email, $2 name, $3 list slug, $4 source, $5 ip, $6 user agent, $7 request id, $8 traceparent.
WITH list AS (
    SELECT id, optin FROM lists WHERE slug = $3 AND visibility = 'public'
), suppression AS (
    SELECT reason FROM suppressions WHERE lower(suppressions.email) = lower($1)
), stopping AS (
    SELECT FROM suppressions_stopping('confirmation') AS s WHERE s.address = lower($1)
), subscriber AS (
    INSERT INTO subscribers (email, name)
    SELECT $1, $2 FROM list
    ON CONFLICT ((lower(email))) DO UPDATE SET updated_at = subscribers.updated_at
    RETURNING id, status
), subscription AS (
    INSERT INTO subscriptions (
        subscriber_id, list_id, status, confirmed_at, source, signup_ip, signup_user_agent
    )
    SELECT subscriber.id, list.id, at_once.status, CASE WHEN at_once.status = 'confirmed' THEN now() END,
           $4, $5::inet, $6
    FROM subscriber, list,
         LATERAL (SELECT CASE WHEN list.optin = 'single' AND NOT EXISTS (SELECT FROM suppression)
                              THEN 'confirmed' ELSE 'pending' END AS status) AS at_once
    ON CONFLICT (subscriber_id, list_id) DO UPDATE SET
        -- A pending sign-up takes the evidence of the latest request; nothing else changes.
        source = CASE WHEN subscriptions.status = 'pending' THEN excluded.source ELSE subscriptions.source END,
        signup_ip = CASE WHEN subscriptions.status = 'pending' THEN excluded.signup_ip
                         ELSE subscriptions.signup_ip END,
        signup_user_agent = CASE WHEN subscriptions.status = 'pending' THEN excluded.signup_user_agent
                                 ELSE subscriptions.signup_user_agent END,
        updated_at = CASE WHEN subscriptions.status = 'pending' THEN now() ELSE subscriptions.updated_at END
    RETURNING subscriber_id, list_id, status, created_at = now() AS created
), delivery AS (
    INSERT INTO deliveries (kind, subscriber_id, list_id, recipient, request_id, traceparent)
    SELECT 'confirmation', subscription.subscriber_id, subscription.list_id, $1, $7, $8
    FROM subscription, subscriber
    WHERE subscription.status IN ('pending', 'unsubscribed')
      AND subscriber.status = 'active'
      AND NOT EXISTS (SELECT FROM stopping)
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM list) AS list_found,
       (SELECT count(*) FROM delivery) AS emails_queued,
       -- For the funnel's counters: a subscription made now (not one asked for again), and confirmed at once.
       EXISTS (SELECT 1 FROM subscription WHERE created) AS signed_up,
       EXISTS (SELECT 1 FROM subscription WHERE created AND status = 'confirmed') AS confirmed_at_once;

-- name: confirm
-- Marks the token used and confirms its subscription in one statement. The outer SELECT reads the token as it
-- was before this statement, which tells a fresh confirmation from a repeated, expired or unknown one.
-- A subscription left before the token was made comes back: the person asked again and confirms now. A token
-- made before they left brings nothing back: it reads as expired.
WITH used AS (
    UPDATE confirmation_tokens AS token SET used_at = now()
    FROM subscriptions
    WHERE token.token_hash = $1 AND token.used_at IS NULL AND token.expires_at > now()
      AND subscriptions.subscriber_id = token.subscriber_id AND subscriptions.list_id = token.list_id
      AND NOT (subscriptions.status = 'unsubscribed' AND subscriptions.unsubscribed_at >= token.created_at)
    RETURNING token.subscriber_id, token.list_id, token.created_at
), confirmed AS (
    UPDATE subscriptions SET status = 'confirmed', confirmed_at = now(), updated_at = now(),
                             unsubscribed_at = NULL, confirm_ip = $2::inet, confirm_user_agent = $3
    FROM used
    WHERE subscriptions.subscriber_id = used.subscriber_id
      AND subscriptions.list_id = used.list_id
      AND (subscriptions.status = 'pending'
           OR (subscriptions.status = 'unsubscribed' AND subscriptions.unsubscribed_at < used.created_at))
    RETURNING subscriptions.subscriber_id
), lifted AS (
    -- Someone who had unsubscribed from everything has now asked again, explicitly.
    DELETE FROM suppressions
    USING subscribers, confirmed
    WHERE subscribers.id = confirmed.subscriber_id
      AND lower(suppressions.email) = lower(subscribers.email)
      AND suppressions.reason = 'unsubscribe_all'
    RETURNING 1
)
SELECT token.used_at IS NOT NULL AS used_before,
       token.expires_at <= now() AS expired,
       subscriptions.status = 'unsubscribed' AND subscriptions.unsubscribed_at >= token.created_at AS left_since,
       EXISTS (SELECT 1 FROM used) AS used_now,
       (SELECT count(*) FROM lifted) AS lifted,
       EXISTS (SELECT 1 FROM confirmed) AS confirmed_now,
       lists.name AS list_name,
       lists.slug AS list_slug
FROM confirmation_tokens AS token
JOIN lists ON lists.id = token.list_id
JOIN subscriptions ON subscriptions.subscriber_id = token.subscriber_id AND subscriptions.list_id = token.list_id
WHERE token.token_hash = $1;

-- name: token_state
SELECT token.used_at IS NOT NULL AS used,
       token.expires_at <= now() AS expired,
       subscriptions.status = 'unsubscribed' AND subscriptions.unsubscribed_at >= token.created_at AS left_since,
       lists.name AS list_name
FROM confirmation_tokens AS token
JOIN lists ON lists.id = token.list_id
JOIN subscriptions ON subscriptions.subscriber_id = token.subscriber_id AND subscriptions.list_id = token.list_id
WHERE token.token_hash = $1;

-- name: resend_confirmation
-- Queues a fresh confirmation email for the still-unconfirmed subscription behind an (expired) token: pending,
-- or left before the token was made (a sign-up again after leaving).
WITH target AS (
    SELECT subscriptions.subscriber_id, subscriptions.list_id, subscribers.email
    FROM confirmation_tokens AS token
    JOIN subscriptions USING (subscriber_id, list_id)
    JOIN subscribers ON subscribers.id = subscriptions.subscriber_id
    WHERE token.token_hash = $1
      AND (subscriptions.status = 'pending'
           OR (subscriptions.status = 'unsubscribed' AND subscriptions.unsubscribed_at < token.created_at))
      AND subscribers.status = 'active'
      AND NOT EXISTS (SELECT FROM suppressions_stopping('confirmation') AS s
                      WHERE s.address = lower(subscribers.email))
), delivery AS (
    INSERT INTO deliveries (kind, subscriber_id, list_id, recipient, request_id, traceparent)
    SELECT 'confirmation', subscriber_id, list_id, email, $2, $3 FROM target
    RETURNING id
), wake AS (
    SELECT pg_notify('newsletter_deliveries', '') FROM delivery
)
SELECT (SELECT count(*) FROM delivery) AS emails_queued, (SELECT count(*) FROM wake) AS woken,
       (SELECT email FROM target) AS email;

-- name: unsubscribe_preferences
SELECT subscribers.email, lists.id AS list_id, lists.name AS list_name, subscriptions.status
FROM subscribers
JOIN subscriptions ON subscriptions.subscriber_id = subscribers.id
JOIN lists ON lists.id = subscriptions.list_id
WHERE subscribers.id = $1
ORDER BY lists.name;

-- name: unsubscribe
-- $1 subscriber, $2 list, $3 every list (and suppress the address). NULL when the subscriber does not exist.
WITH person AS (
    SELECT id, email FROM subscribers WHERE id = $1
), ended AS (
    UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = now(), updated_at = now()
    FROM person
    WHERE subscriptions.subscriber_id = person.id AND (subscriptions.list_id = $2 OR $3)
      AND subscriptions.status <> 'unsubscribed'
    RETURNING 1
), suppressed AS (
    INSERT INTO suppressions (email, reason, detail)
    SELECT email, 'unsubscribe_all', 'unsubscribed from every list' FROM person WHERE $3
    ON CONFLICT ((lower(email))) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM ended) FROM person;
