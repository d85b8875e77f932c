-- name: subscriber_export
-- Everything held about one person, as JSON.
SELECT json_build_object(
    'subscriber', json_build_object(
        'id', subscribers.id, 'email', subscribers.email, 'name', subscribers.name,
        'attributes', subscribers.attributes, 'status', subscribers.status,
        'created_at', subscribers.created_at, 'updated_at', subscribers.updated_at),
    'subscriptions', coalesce((
        SELECT json_agg(json_build_object(
            'list', lists.slug, 'list_name', lists.name, 'status', s.status, 'created_at', s.created_at,
            'confirmed_at', s.confirmed_at, 'unsubscribed_at', s.unsubscribed_at, 'source', s.source,
            'signup_ip', host(s.signup_ip), 'signup_user_agent', s.signup_user_agent,
            'confirm_ip', host(s.confirm_ip), 'confirm_user_agent', s.confirm_user_agent) ORDER BY lists.slug)
        FROM subscriptions AS s JOIN lists ON lists.id = s.list_id WHERE s.subscriber_id = subscribers.id), '[]'),
    'confirmation_links', coalesce((
        SELECT json_agg(json_build_object('created_at', t.created_at, 'expires_at', t.expires_at,
                                          'used_at', t.used_at) ORDER BY t.created_at)
        FROM confirmation_tokens AS t WHERE t.subscriber_id = subscribers.id), '[]'),
    'deliveries', coalesce((
        SELECT json_agg(json_build_object(
            'id', d.id, 'kind', d.kind, 'issue_id', d.issue_id, 'issue_subject', issues.subject,
            'recipient', d.recipient, 'status', d.status, 'attempts', d.attempts, 'last_error', d.last_error,
            'created_at', d.created_at, 'sent_at', d.sent_at) ORDER BY d.id)
        FROM deliveries AS d LEFT JOIN issues ON issues.id = d.issue_id
        WHERE d.subscriber_id = subscribers.id OR lower(d.recipient) = lower(subscribers.email)), '[]'),
    'suppressions', coalesce((
        SELECT json_agg(json_build_object('reason', x.reason, 'detail', x.detail, 'created_at', x.created_at))
        FROM suppressions AS x WHERE lower(x.email) = lower(subscribers.email)), '[]'),
    'bounces_and_complaints', coalesce((
        SELECT json_agg(json_build_object('provider', e.provider, 'kind', e.kind, 'delivery_id', e.delivery_id,
                                          'detail', e.detail, 'occurred_at', e.occurred_at) ORDER BY e.id)
        FROM delivery_events AS e WHERE lower(e.email) = lower(subscribers.email)), '[]'),
    'events', coalesce((
        SELECT json_agg(json_build_object('id', e.id, 'type', e.type, 'created_at', e.created_at,
                                          'data', e.data) ORDER BY e.id)
        FROM events AS e WHERE e.address = lower(subscribers.email)), '[]')
)
FROM subscribers WHERE subscribers.id = $1;

-- name: erasure_begin
-- For the rest of the transaction, what an erasure removes is not reported as a change (migration 0014).
SELECT set_config('newsletter.erasing', 'on', true);

-- name: subscribers_erase
-- Removes every personal datum of the people $1 (ids): erasure on request, and the purge of stale sign-ups.
-- Deliveries stay (without the address, name or error text) so that the counts of past issues stay right.
WITH person AS (
    SELECT id, email FROM subscribers WHERE id = ANY($1::bigint[])
), scrubbed AS (
    UPDATE deliveries
    SET recipient = 'erased', subscriber_id = NULL, last_error = NULL, provider_message_id = NULL,
        request_id = NULL, updated_at = now()
    FROM person
    WHERE deliveries.subscriber_id = person.id OR lower(deliveries.recipient) = lower(person.email)
    RETURNING 1
), kept AS (
    -- The suppression outlives the address as a keyed hash, restored if the address comes back.
    INSERT INTO erased_suppressions (address_hash, reason)
    SELECT erased_address_hash(suppressions.email), suppressions.reason
    FROM suppressions JOIN person ON lower(suppressions.email) = lower(person.email)
    ON CONFLICT (address_hash) DO UPDATE SET reason = excluded.reason
    WHERE erased_suppressions.reason = 'unsubscribe_all'
), unsuppressed AS (
    DELETE FROM suppressions USING person WHERE lower(suppressions.email) = lower(person.email) RETURNING 1
), forgotten_events AS (
    DELETE FROM delivery_events USING person WHERE lower(delivery_events.email) = lower(person.email)
    RETURNING 1
), unlimited AS (
    -- The sign-up limit counts per mailbox: the address without its +tag (services/subscriptions.py).
    DELETE FROM rate_limits USING person
    WHERE rate_limits.key = 'signup:mailbox:' || lower(regexp_replace(person.email, '\+[^@]*(@[^@]*)$', '\1'))
    RETURNING 1
), forgotten_responses AS (
    -- Stored responses hold the address as it is, or (stored before migration 0012) with its non-ASCII
    -- characters escaped.
    DELETE FROM idempotency_keys USING person
    WHERE position(lower(person.email) IN lower(convert_from(idempotency_keys.response_body, 'UTF8'))) > 0
       OR position(lower(json_ascii_escaped(person.email))
                   IN lower(convert_from(idempotency_keys.response_body, 'UTF8'))) > 0
    RETURNING 1
), forgotten_in_events AS (
    -- The event record keeps what happened (ids, types, times), not who it happened to. Set to erase
    -- (erasure_begin), the suppressions removed above are not reported as removed.
    UPDATE events SET address = NULL, data = data - '{email,name,attributes,error,detail}'::text[]
    FROM person
    WHERE events.address = lower(person.email)
    RETURNING 1
), erased AS (
    DELETE FROM subscribers USING person WHERE subscribers.id = person.id RETURNING 1
)
SELECT (SELECT count(*) FROM erased) AS erased, (SELECT count(*) FROM scrubbed) AS deliveries;

-- name: stale_unconfirmed
-- People who signed up and never confirmed anything within $1 days (a bounded batch).
SELECT subscribers.id FROM subscribers
WHERE subscribers.created_at < now() - make_interval(days => $1)
  AND NOT EXISTS (SELECT 1 FROM subscriptions AS s
                  WHERE s.subscriber_id = subscribers.id AND s.status <> 'pending')
  AND EXISTS (SELECT 1 FROM subscriptions AS s WHERE s.subscriber_id = subscribers.id)
LIMIT 10000;
