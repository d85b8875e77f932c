-- A million-row CSV import spent more time in the two foreign keys of subscriptions than in writing the
-- rows: PostgreSQL checks a foreign key with one query per row and key, and the subscriber key also locked
-- every subscriber row it named (7.5 of the import's 27 seconds; 11 seconds for a bare million-row insert).
-- The same guarantees, kept per statement instead of per row:
--
-- * A subscription names a subscriber and a list that exist: after each INSERT into subscriptions, one query
--   over all its rows (an INSERT that names a missing one fails, with the foreign key's SQLSTATE, 23503).
-- * Deleting subscribers or lists deletes their subscriptions (and so their confirmation tokens), whatever
--   the DELETE: after each DELETE, one statement over all the deleted rows. TRUNCATE empties subscriptions.
-- * A subscription's subscriber and list never change: an UPDATE that tries is refused.
-- * Concurrency, which the foreign keys handled by locking each referenced row until commit: a list is still
--   locked (FOR KEY SHARE, a few rows per statement), so a list being deleted and a subscription being added
--   to it wait for each other. Subscribers are many, so instead of a lock per row, the transaction-level
--   advisory lock (1937072755, 0) ('subs'): inserting subscriptions holds it shared, deleting subscribers
--   holds it exclusively from just before the cascade. Each side's next statement, after the lock, reads a
--   fresh snapshot (READ COMMITTED, at which the service runs every transaction), so it sees what the other
--   side committed: a subscription added while its subscriber is deleted is deleted with it or refused.
ALTER TABLE subscriptions
    DROP CONSTRAINT subscriptions_subscriber_id_fkey,
    DROP CONSTRAINT subscriptions_list_id_fkey;

-- One pass over the inserted rows (a million for a large import): the subscriber check, and the lists they
-- name, which are nearly always one (any others are read in a second pass).
CREATE FUNCTION subscriptions_check_references() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    first_list bigint;
    last_list bigint;
    missing_list bigint;
    missing_subscriber bigint;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1937072755, 0);
    SELECT min(added.list_id), max(added.list_id),
           min(added.subscriber_id) FILTER (WHERE subscribers.id IS NULL)
    INTO first_list, last_list, missing_subscriber
    FROM added
    LEFT JOIN subscribers ON subscribers.id = added.subscriber_id;
    IF missing_subscriber IS NOT NULL THEN
        RAISE EXCEPTION 'insert on table "subscriptions" names a subscriber that does not exist'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'subscriptions', COLUMN = 'subscriber_id',
                  DETAIL = format('Key (subscriber_id)=(%s) is not present in table "subscribers".',
                                  missing_subscriber);
    END IF;

    -- A list that is locked exists: a row deleted by a transaction that committed is not returned, even
    -- after waiting for it (the foreign key's own check is this query).
    IF first_list = last_list THEN
        PERFORM FROM lists WHERE id = first_list FOR KEY SHARE;
        IF NOT FOUND THEN
            missing_list := first_list;
        END IF;
    ELSIF first_list IS NOT NULL THEN
        PERFORM FROM lists WHERE id IN (SELECT list_id FROM added) ORDER BY id FOR KEY SHARE;
        SELECT named.list_id INTO missing_list
        FROM (SELECT DISTINCT list_id FROM added) AS named
        WHERE NOT EXISTS (SELECT FROM lists WHERE lists.id = named.list_id)
        LIMIT 1;
    END IF;
    IF missing_list IS NOT NULL THEN
        RAISE EXCEPTION 'insert on table "subscriptions" names a list that does not exist'
            USING ERRCODE = 'foreign_key_violation', TABLE = 'subscriptions', COLUMN = 'list_id',
                  DETAIL = format('Key (list_id)=(%s) is not present in table "lists".', missing_list);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER subscriptions_check_references AFTER INSERT ON subscriptions
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION subscriptions_check_references();

CREATE FUNCTION subscriptions_keep_references() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a subscription''s subscriber and list cannot change'
        USING ERRCODE = 'foreign_key_violation', TABLE = 'subscriptions';
END
$$;

CREATE TRIGGER subscriptions_keep_references BEFORE UPDATE OF subscriber_id, list_id ON subscriptions
    FOR EACH ROW
    WHEN (OLD.subscriber_id IS DISTINCT FROM NEW.subscriber_id OR OLD.list_id IS DISTINCT FROM NEW.list_id)
    EXECUTE FUNCTION subscriptions_keep_references();

CREATE FUNCTION subscribers_delete_subscriptions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM removed) THEN
        RETURN NULL;  -- a DELETE that found nobody does not wait for the imports and sign-ups under way
    END IF;
    PERFORM pg_advisory_xact_lock(1937072755, 0);
    DELETE FROM subscriptions WHERE subscriber_id IN (SELECT id FROM removed);
    RETURN NULL;
END
$$;

CREATE TRIGGER subscribers_delete_subscriptions AFTER DELETE ON subscribers
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION subscribers_delete_subscriptions();

CREATE FUNCTION lists_delete_subscriptions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM subscriptions WHERE list_id IN (SELECT id FROM removed);
    RETURN NULL;
END
$$;

CREATE TRIGGER lists_delete_subscriptions AFTER DELETE ON lists
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION lists_delete_subscriptions();

CREATE FUNCTION truncate_subscriptions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE subscriptions CASCADE;
    RETURN NULL;
END
$$;

CREATE TRIGGER subscribers_truncate_subscriptions AFTER TRUNCATE ON subscribers
    FOR EACH STATEMENT EXECUTE FUNCTION truncate_subscriptions();
CREATE TRIGGER lists_truncate_subscriptions AFTER TRUNCATE ON lists
    FOR EACH STATEMENT EXECUTE FUNCTION truncate_subscriptions();
