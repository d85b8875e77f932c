-- name: suppressed_among
-- Which of these addresses are on the suppression list, and why (the ledger marks them: a retry cannot reach
-- them).
SELECT given.recipient, suppressions.reason
FROM unnest($1::text[]) AS given(recipient)
JOIN suppressions ON lower(suppressions.email) = lower(given.recipient);

-- name: suppression_page
-- Keyset pagination by id; $1 cursor (last id seen), $2 reason, $3 search, $4 limit.
SELECT id, email, reason, detail, created_at
FROM suppressions
WHERE ($1::bigint IS NULL OR id > $1)
  AND ($2::text IS NULL OR reason = $2)
  AND ($3::text IS NULL OR email ILIKE '%' || $3 || '%')
ORDER BY id
LIMIT $4;

-- name: suppression_add
-- Adding an address that is suppressed already keeps the entry as it is, unless it only records an unsubscribe
-- from every list (which a new sign-up lifts): a stronger reason replaces that one.
INSERT INTO suppressions AS existing (email, reason, detail) VALUES ($1, $2, $3)
ON CONFLICT ((lower(email))) DO UPDATE SET reason = excluded.reason, detail = excluded.detail
WHERE existing.reason = 'unsubscribe_all' AND excluded.reason <> 'unsubscribe_all';

-- name: suppression_get
SELECT id, email, reason, detail, created_at FROM suppressions WHERE lower(email) = lower($1);

-- name: suppression_delete
DELETE FROM suppressions WHERE lower(email) = lower($1) RETURNING id;
