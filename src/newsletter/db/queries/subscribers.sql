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
      AND NOT EXISTS (SELECT FROM suppressions_stopping('confirmation') AS s
                      WHERE s.address = lower(subscribers.email))
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

-- name: subscriber_update
UPDATE subscribers
SET name = coalesce($2, name), attributes = coalesce($3, attributes), status = coalesce($4, status),
    updated_at = now()
WHERE id = $1
RETURNING id;

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

-- name: subscribers_page
-- A page of the subscribers page, walking the primary key from the cursor and checking each person: quick
-- when most people pass. $1 last id seen or NULL, $2 subscriber status or NULL, $3 LIKE pattern for the
-- address or the name (matched lowercased) or NULL, $4 page size.
SELECT id, email, name, status, attributes, created_at, updated_at
FROM subscribers
WHERE id > coalesce($1::bigint, 0)
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR lower(email) LIKE lower($3) OR lower(name) LIKE lower($3))
ORDER BY id
LIMIT $4;

-- name: subscribers_page_in_lists
-- A page of the people subscribed to list $5 (any list when NULL) with status $6 there (any status when
-- NULL), in id order. Each (list, status) range of the (list_id, status, subscriber_id) index is walked in id
-- order up to a page of people who pass the other filters ($2 and $3 as for subscribers_page), and the walks
-- are merged: a few short walks, however many or few people match. $1 and $4 as for subscribers_page.
SELECT DISTINCT ON (person.id) person.id, person.email, person.name, person.status, person.attributes,
       person.created_at, person.updated_at
FROM lists
CROSS JOIN unnest(ARRAY['confirmed', 'pending', 'unsubscribed']) AS wanted(status)
CROSS JOIN LATERAL (
    SELECT subscribers.id, subscribers.email, subscribers.name, subscribers.status, subscribers.attributes,
           subscribers.created_at, subscribers.updated_at
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

-- name: subscribers_beginning
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

-- name: subscribers_blocklisted
-- The ids of up to $2 blocklisted people after the cursor $1, in id order.
SELECT ARRAY(SELECT id FROM subscribers WHERE status = 'blocklisted' AND id > coalesce($1::bigint, 0)
             ORDER BY id LIMIT $2);

-- name: subscribers_page_among
-- A page of the people given by id ($3, ascending), checking each: $5 list id or NULL, $6 subscription status
-- (in that list, or in any) or NULL; $1, $2 and $4 as for subscribers_page.
SELECT id, email, name, status, attributes, created_at, updated_at
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
