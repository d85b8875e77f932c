-- name: segment_insert
INSERT INTO segments (name, expression) VALUES ($1, $2)
ON CONFLICT (lower(name)) DO NOTHING
RETURNING *;

-- name: segment_get
SELECT * FROM segments WHERE id = $1;

-- name: segments_all
SELECT * FROM segments ORDER BY lower(name);

-- name: segment_update
-- NULL leaves a field as it is. A name taken by another segment: no row (the caller says so).
UPDATE segments
SET name = coalesce($2, name), expression = coalesce($3, expression), updated_at = now()
WHERE id = $1 AND NOT EXISTS (SELECT FROM segments AS other WHERE lower(other.name) = lower($2) AND other.id <> $1)
RETURNING *;

-- name: segment_delete
-- Refused (no row deleted, the blocking issue returned) while an issue that has not started uses it.
WITH blocking AS (
    SELECT min(id) AS issue_id FROM issues
    WHERE segment_id = $1 AND status IN ('draft', 'scheduled')
), deleted AS (
    DELETE FROM segments WHERE id = $1 AND (SELECT issue_id FROM blocking) IS NULL RETURNING id
)
SELECT (SELECT id FROM deleted) AS deleted, (SELECT issue_id FROM blocking) AS used_by,
       EXISTS (SELECT FROM segments WHERE id = $1) AS found;

-- name: segment_count
-- The people a compiled segment matches, counted up to $1 and estimated beyond. The segment slot is
-- replaced by the compiled expression over `subscribers` (domain/segments.py: fields from an allow-list,
-- every value a parameter from $2 on). Only active people count: blocklisted ones are never sent to.
SELECT count(*) AS counted
FROM (SELECT FROM subscribers WHERE subscribers.status = 'active' AND /* segment */ true LIMIT $1) AS matched;

-- name: segment_sample
-- Beyond the budget: how many rows of a sample of the table's pages ($1 percent) match. (The planner's own
-- estimate of a segment is no help: it knows nothing of `@>` on attributes and guesses a thousandth.)
SELECT count(*) FILTER (WHERE subscribers.status = 'active' AND /* segment */ true) AS matched,
       count(*) AS sampled
FROM subscribers TABLESAMPLE SYSTEM ($1);

-- name: subscribers_rows
-- How many rows the table holds, by the planner's statistics.
SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'subscribers'::regclass;
