-- Every index and foreign key on deliveries is paid for by each row an issue's fan-out creates: a million-row
-- send checked a million foreign keys (locking a million subscriber rows) and filled five indexes.
--
-- One unique index on (subscriber_id, issue_id) both keeps each person to one copy of an issue and finds a
-- person's deliveries (export, erasure), where two indexes did those jobs before. The foreign keys go: the
-- ledger outlives what it points at on purpose, erasure and purging clear subscriber_id themselves, and a
-- delivery whose subscription or list is gone is cancelled when a worker claims it.
DROP INDEX deliveries_issue_subscriber;
DROP INDEX deliveries_subscriber;
CREATE UNIQUE INDEX deliveries_subscriber_issue ON deliveries (subscriber_id, issue_id);
ALTER TABLE deliveries
    DROP CONSTRAINT deliveries_subscriber_id_fkey,
    DROP CONSTRAINT deliveries_list_id_fkey,
    DROP CONSTRAINT deliveries_issue_id_fkey;
