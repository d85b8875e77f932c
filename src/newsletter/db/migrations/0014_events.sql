-- The event record: every change an integrator cares about, written in the same transaction as the change, by
-- triggers on the tables that change, so that no path (a handler, an import, a cascade, the worker) can change
-- without its event or write an event without its change. `data` holds ids and the fields that changed.
-- `address` is the (lowercased) address of the person an event holds personal data of: an erasure empties it
-- and takes the personal fields out of `data`.
--
-- Ids increase in the order events are written, but transactions commit in their own order: an event with a
-- smaller id may become visible after one with a larger id. A reader that kept the largest id it saw would
-- skip it. So events are read in the order of the transaction that wrote them (`txid`, then `id`), and only
-- those of transactions older than every one still running (`txid < pg_snapshot_xmin(...)`): that sequence
-- only ever grows at its end, and a cursor into it misses nothing.
CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type text NOT NULL CHECK (type IN (
        'subscriber.created', 'subscriber.updated', 'subscriber.erased',
        'subscription.pending', 'subscription.confirmed', 'subscription.unsubscribed',
        'suppression.added', 'suppression.removed',
        'issue.scheduled', 'issue.sending', 'issue.paused', 'issue.sent', 'issue.cancelled',
        'delivery.sent', 'delivery.failed', 'delivery.bounced', 'delivery.complained',
        'sequence.entered', 'sequence.completed',
        'tx.sent', 'tx.failed',
        'webhook.disabled', 'webhook.test'
    )),
    created_at timestamptz NOT NULL DEFAULT now(),
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    address text,
    data jsonb NOT NULL
);

CREATE INDEX events_in_commit_order ON events (txid, id);
-- Appended in time order: a BRIN index finds the events past the retention period for almost nothing.
CREATE INDEX events_created ON events USING brin (created_at);
CREATE INDEX events_address ON events (address) WHERE address IS NOT NULL;

CREATE FUNCTION erasing() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('newsletter.erasing', true), '') = 'on'
$$;

CREATE FUNCTION subscribers_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO events (type, address, data)
        SELECT 'subscriber.created', lower(added.email),
               jsonb_build_object('subscriber_id', added.id, 'email', added.email, 'name', added.name,
                                  'status', added.status)
        FROM added ORDER BY added.id;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO events (type, address, data)
        SELECT 'subscriber.updated', lower(after.email),
               jsonb_build_object('subscriber_id', after.id, 'email', after.email)
               || jsonb_strip_nulls(jsonb_build_object(
                      'name', CASE WHEN after.name IS DISTINCT FROM before.name THEN after.name END,
                      'attributes', CASE WHEN after.attributes IS DISTINCT FROM before.attributes
                                         THEN after.attributes END,
                      'status', CASE WHEN after.status IS DISTINCT FROM before.status THEN after.status END))
        FROM changed AS after JOIN previous AS before ON before.id = after.id
        WHERE (after.name, after.attributes, after.status) IS DISTINCT FROM
              (before.name, before.attributes, before.status)
        ORDER BY after.id;
    ELSE
        INSERT INTO events (type, data)
        SELECT 'subscriber.erased', jsonb_build_object('subscriber_id', removed.id)
        FROM removed ORDER BY removed.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER subscribers_created AFTER INSERT ON subscribers REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION subscribers_events();
CREATE TRIGGER subscribers_updated AFTER UPDATE ON subscribers
    REFERENCING NEW TABLE AS changed OLD TABLE AS previous
    FOR EACH STATEMENT EXECUTE FUNCTION subscribers_events();
CREATE TRIGGER subscribers_erased AFTER DELETE ON subscribers REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION subscribers_events();

-- A subscription's status, when it is new or changes: subscription.pending, .confirmed or .unsubscribed.
CREATE FUNCTION subscription_event(new_status text, person bigint, list bigint, consent_source text)
RETURNS TABLE (type text, address text, data jsonb)
LANGUAGE sql STABLE AS $$
    SELECT 'subscription.' || new_status, lower(subscribers.email),
           jsonb_build_object('subscriber_id', person, 'list_id', list, 'list', lists.slug,
                              'email', subscribers.email, 'source', consent_source)
    FROM subscribers, lists WHERE subscribers.id = person AND lists.id = list
$$;

CREATE FUNCTION subscriptions_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO events (type, address, data)
        SELECT event.* FROM changed AS after,
             LATERAL subscription_event(after.status, after.subscriber_id, after.list_id, after.source) AS event
        ORDER BY after.subscriber_id, after.list_id;
    ELSE
        INSERT INTO events (type, address, data)
        SELECT event.* FROM changed AS after
        JOIN previous AS before USING (subscriber_id, list_id),
             LATERAL subscription_event(after.status, after.subscriber_id, after.list_id, after.source) AS event
        WHERE after.status IS DISTINCT FROM before.status
        ORDER BY after.subscriber_id, after.list_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER subscriptions_created AFTER INSERT ON subscriptions REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION subscriptions_events();
CREATE TRIGGER subscriptions_changed AFTER UPDATE ON subscriptions
    REFERENCING NEW TABLE AS changed OLD TABLE AS previous
    FOR EACH STATEMENT EXECUTE FUNCTION subscriptions_events();

CREATE FUNCTION suppressions_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO events (type, address, data)
        SELECT 'suppression.added', lower(added.email),
               jsonb_build_object('email', added.email, 'reason', added.reason)
        FROM added ORDER BY added.id;
    ELSIF TG_OP = 'UPDATE' THEN  -- a stronger reason replaced an unsubscribe from every list
        INSERT INTO events (type, address, data)
        SELECT 'suppression.added', lower(after.email),
               jsonb_build_object('email', after.email, 'reason', after.reason)
        FROM changed AS after JOIN previous AS before ON before.id = after.id
        WHERE after.reason IS DISTINCT FROM before.reason
        ORDER BY after.id;
    ELSIF NOT erasing() THEN
        INSERT INTO events (type, address, data)
        SELECT 'suppression.removed', lower(removed.email),
               jsonb_build_object('email', removed.email, 'reason', removed.reason)
        FROM removed ORDER BY removed.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER suppressions_added AFTER INSERT ON suppressions REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION suppressions_events();
CREATE TRIGGER suppressions_changed AFTER UPDATE ON suppressions
    REFERENCING NEW TABLE AS changed OLD TABLE AS previous
    FOR EACH STATEMENT EXECUTE FUNCTION suppressions_events();
CREATE TRIGGER suppressions_removed AFTER DELETE ON suppressions REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION suppressions_events();

-- An issue's status, when it changes to one an integrator follows.
CREATE FUNCTION issues_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (type, data)
    SELECT 'issue.' || after.status,
           jsonb_build_object('issue_id', after.id, 'subject', after.subject, 'total', after.total_count,
                              'sent', after.sent_count, 'failed', after.failed_count)
    FROM changed AS after JOIN previous AS before ON before.id = after.id
    WHERE after.status IS DISTINCT FROM before.status
      AND after.status IN ('scheduled', 'sending', 'paused', 'sent', 'cancelled')
    ORDER BY after.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER issues_changed AFTER UPDATE ON issues REFERENCING NEW TABLE AS changed OLD TABLE AS previous
    FOR EACH STATEMENT EXECUTE FUNCTION issues_events();

-- An email's outcome (delivery.sent, .failed, .bounced, .complained) is written by the two statements that
-- settle deliveries (record_outcomes, reports_apply) in the same statement: a trigger would have had every
-- claim of a batch build and join tables of the rows it updates, for nothing.
