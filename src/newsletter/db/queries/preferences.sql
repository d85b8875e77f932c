-- name: preferences_person
-- The person a preference link names, if they still exist.
SELECT id, email, name, status FROM subscribers WHERE id = $1;

-- name: preferences_lists
-- The public lists, each with the person's state in it (NULL: not in it).
SELECT lists.id, lists.slug, lists.name, lists.description, subscriptions.status
FROM lists
LEFT JOIN subscriptions ON subscriptions.list_id = lists.id AND subscriptions.subscriber_id = $1
WHERE lists.visibility = 'public'
ORDER BY lists.name, lists.id;

-- name: preferences_join
-- The person $1 joins the public list $2, confirmed: the signed link proves the address, and the click is
-- their own request (recorded as the consent, from $3 and $4). Joining again changes nothing. Leaving every
-- list had suppressed the address; joining one is the person taking that back. A blocklisted person joins
-- nothing. Returns whether the person was found, the list's slug if it was, and whether anything changed.
WITH person AS (
    SELECT id, email FROM subscribers WHERE id = $1 AND status = 'active'
), target AS (
    SELECT id, slug FROM lists WHERE id = $2 AND visibility = 'public'
), joined AS (
    INSERT INTO subscriptions AS s (subscriber_id, list_id, status, confirmed_at, source, signup_ip,
                                    signup_user_agent, confirm_ip, confirm_user_agent)
    SELECT person.id, target.id, 'confirmed', now(), 'preferences', $3, $4, $3, $4 FROM person, target
    ON CONFLICT (subscriber_id, list_id) DO UPDATE
    SET status = 'confirmed', confirmed_at = now(), unsubscribed_at = NULL, updated_at = now(),
        source = 'preferences', confirm_ip = $3, confirm_user_agent = $4
    WHERE s.status <> 'confirmed'
    RETURNING 1
), unsuppressed AS (
    DELETE FROM suppressions
    USING person
    WHERE lower(suppressions.email) = lower(person.email) AND suppressions.reason = 'unsubscribe_all'
      AND EXISTS (SELECT FROM target)
)
SELECT EXISTS (SELECT FROM person) AS person, (SELECT slug FROM target) AS list,
       (SELECT count(*) FROM joined) AS joined;

-- name: preferences_rename
UPDATE subscribers SET name = $2, updated_at = now() WHERE id = $1 AND name IS DISTINCT FROM $2 RETURNING id;
