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

-- name: list_by_slug
SELECT id FROM lists WHERE slug = $1;

-- name: without_jit
-- For the rest of the transaction: the statements that estimate and count plan costs far above what they do,
-- and JIT compiling them took a third of a second each, to save nothing.
SET LOCAL jit = off;

-- name: list_names
SELECT id, slug, name FROM lists ORDER BY id;

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

-- name: public_list
-- A list open to public sign-up; a private one is not found, as an unknown one.
SELECT id, slug, name, description, optin FROM lists WHERE slug = $1 AND visibility = 'public';
