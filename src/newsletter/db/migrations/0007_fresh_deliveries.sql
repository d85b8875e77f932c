-- A fan-out writes a million ledger rows in one statement, and every index on deliveries is paid for by each of
-- them. Two indexes go out of that path:
--
-- * Fresh newsletter deliveries (never tried yet) no longer enter the claim index. They are created with no
--   next_attempt_at and workers take them in primary-key order, from the range of ids the fan-out wrote
--   (first_delivery_id..last_delivery_id on the issue), behind a cursor on the issue row (claimed_through). Only
--   rows that have a time to wait for (retries, reclaimed leases, confirmations, test sends) are in the claim
--   index.
-- * The (issue_id, status, id) index is replaced by that id range (the ledger pages through it in key order) and
--   by a partial index holding only the deliveries that need attention, which a fan-out never writes.
ALTER TABLE issues
    ADD COLUMN first_delivery_id bigint,
    ADD COLUMN last_delivery_id bigint,
    ADD COLUMN claimed_through bigint,
    -- The request that started the send, which newsletter deliveries share instead of a copy per row.
    ADD COLUMN request_id text;

UPDATE issues
SET first_delivery_id = bounds.first_id, last_delivery_id = bounds.last_id, claimed_through = bounds.last_id
FROM (
    SELECT issue_id, min(id) AS first_id, max(id) AS last_id
    FROM deliveries
    WHERE kind = 'newsletter'
    GROUP BY issue_id
) AS bounds
WHERE issues.id = bounds.issue_id;

ALTER TABLE deliveries ALTER COLUMN next_attempt_at DROP NOT NULL;

DROP INDEX deliveries_issue_status;
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'queued' AND next_attempt_at IS NOT NULL;
CREATE INDEX deliveries_attention ON deliveries (issue_id, id)
    WHERE status IN ('failed', 'bounced', 'complained', 'suppressed', 'cancelled');
CREATE INDEX deliveries_tests ON deliveries (issue_id, id) WHERE kind = 'test';
