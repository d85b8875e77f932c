-- Automations (SPEC section 12): a sequence belongs to a list and sends its steps, in order, to each person who
-- enters it, each step `delay_seconds` after entering (the first) or after the step before. A welcome email is a
-- sequence of one step without delay.
--
-- The references to lists and subscribers are kept as those of subscriptions are (migration 0010), by statement
-- triggers rather than foreign keys: a deletion or a TRUNCATE of either takes the sequences and members along,
-- and an import or enrollment of a million people pays one query, not one per row.
CREATE TABLE sequences (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    list_id bigint NOT NULL,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sequences_list ON sequences (list_id);

-- The steps, numbered from 1 without gaps (a deletion renumbers them in its transaction, hence DEFERRABLE).
CREATE TABLE sequence_steps (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sequence_id bigint NOT NULL REFERENCES sequences ON DELETE CASCADE,
    position integer NOT NULL CHECK (position >= 1),
    delay_seconds bigint NOT NULL CHECK (delay_seconds BETWEEN 0 AND 315360000),
    subject text NOT NULL,
    markdown text,
    html text NOT NULL,
    text_body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (sequence_id, position) DEFERRABLE INITIALLY IMMEDIATE
);

-- Who is where: `steps_sent` steps queued so far; while active, the next one is due at `next_due_at` (none:
-- no step is written yet past those sent). Erasing a person deletes their rows (a trigger below).
CREATE TABLE sequence_members (
    sequence_id bigint NOT NULL REFERENCES sequences ON DELETE CASCADE,
    subscriber_id bigint NOT NULL,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'completed', 'left')),
    steps_sent integer NOT NULL DEFAULT 0,
    entered_at timestamptz NOT NULL DEFAULT newsletter_now(),
    last_step_at timestamptz,
    next_due_at timestamptz,
    left_at timestamptz,
    left_reason text CHECK (left_reason IN ('unsubscribed', 'suppressed', 'blocklisted')),
    PRIMARY KEY (sequence_id, subscriber_id)
);
-- The sweep reads only what is due, from this index: an idle sequence costs nothing.
CREATE INDEX sequence_members_due ON sequence_members (next_due_at) WHERE status = 'active';
-- No index of the subscriber: every sweep moves members to their next due time, and an index is paid for by
-- each of those updates. A person's rows are found through the primary key, for each sequence (they are few).

-- A step's email is a delivery of its own kind; a person gets each step once: the unique key, not a check,
-- makes sure (a fan-out's rows have no step and stay out of the index).
ALTER TABLE deliveries DROP CONSTRAINT deliveries_kind_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_kind_check
    CHECK (kind IN ('confirmation', 'newsletter', 'test', 'sequence'));
ALTER TABLE deliveries ADD COLUMN step_id bigint;
CREATE UNIQUE INDEX deliveries_step_once ON deliveries (step_id, subscriber_id) WHERE step_id IS NOT NULL;

-- When each active member's next step is due, from the steps as they are now: after a step is added, deleted
-- or its delay changed. `moved`: the sequence whose members to reschedule.
CREATE FUNCTION sequence_reschedule(moved bigint) RETURNS void
LANGUAGE sql AS $$
    UPDATE sequence_members AS m
    SET next_due_at = due.at
    FROM (
        SELECT member.subscriber_id,
               coalesce(member.last_step_at, member.entered_at) + make_interval(secs => step.delay_seconds) AS at
        FROM sequence_members AS member
        LEFT JOIN sequence_steps AS step
            ON step.sequence_id = member.sequence_id AND step.position = member.steps_sent + 1
        WHERE member.sequence_id = moved AND member.status = 'active'
    ) AS due
    WHERE m.sequence_id = moved AND m.subscriber_id = due.subscriber_id AND m.next_due_at IS DISTINCT FROM due.at
$$;

-- People enter the sequences of `list_ids`' lists (pairs with `people`); one who left comes back where they
-- were (steps sent are never sent again). Writes `sequence.entered`.
CREATE FUNCTION enter_sequences(people bigint[], list_ids bigint[]) RETURNS bigint
LANGUAGE sql AS $$
    WITH entering AS (
        SELECT DISTINCT person.subscriber_id, sequences.id AS sequence_id, sequences.list_id
        FROM unnest(people, list_ids) AS person(subscriber_id, list_id)
        JOIN sequences ON sequences.list_id = person.list_id
        JOIN subscribers ON subscribers.id = person.subscriber_id AND subscribers.status = 'active'
        WHERE NOT EXISTS (SELECT FROM suppressions_stopping('sequence') AS s
                          WHERE s.address = lower(subscribers.email))
    ), entered AS (
        INSERT INTO sequence_members AS m (sequence_id, subscriber_id, next_due_at)
        SELECT entering.sequence_id, entering.subscriber_id,
               newsletter_now() + make_interval(secs => first.delay_seconds)
        FROM entering
        LEFT JOIN sequence_steps AS first ON first.sequence_id = entering.sequence_id AND first.position = 1
        ORDER BY entering.sequence_id, entering.subscriber_id
        ON CONFLICT (sequence_id, subscriber_id) DO UPDATE
        SET status = 'active', left_at = NULL, left_reason = NULL, entered_at = newsletter_now(),
            last_step_at = NULL,
            next_due_at = newsletter_now() + make_interval(secs => (
                SELECT delay_seconds FROM sequence_steps AS step
                WHERE step.sequence_id = m.sequence_id AND step.position = m.steps_sent + 1))
        WHERE m.status = 'left'
        RETURNING m.sequence_id, m.subscriber_id
    ), written AS (
        INSERT INTO events (type, address, data)
        SELECT 'sequence.entered', lower(subscribers.email),
               jsonb_build_object('sequence_id', entered.sequence_id, 'subscriber_id', entered.subscriber_id,
                                  'list_id', entering.list_id, 'email', subscribers.email)
        FROM entered
        JOIN entering USING (sequence_id, subscriber_id)
        JOIN subscribers ON subscribers.id = entered.subscriber_id
        ORDER BY entered.sequence_id, entered.subscriber_id
    )
    SELECT count(*) FROM entered
$$;

-- People leave: each person of `people` leaves the sequences of the list beside them in `lists` (NULL: of
-- every list), for `reason`. What every way of leaving below shares.
CREATE FUNCTION leave_sequences(people bigint[], lists bigint[], reason text) RETURNS void
LANGUAGE sql AS $$
    UPDATE sequence_members AS m
    SET status = 'left', left_at = newsletter_now(), left_reason = reason, next_due_at = NULL
    FROM unnest(people, lists) AS person(subscriber_id, list_id)
    JOIN sequences ON person.list_id IS NULL OR sequences.list_id = person.list_id
    WHERE m.sequence_id = sequences.id AND m.subscriber_id = person.subscriber_id AND m.status = 'active'
$$;

-- A subscription confirmed (by any path: a confirmation, single opt-in, the API, the admin) enters the list's
-- sequences; one confirmed by an import only when the import says so (`newsletter.import_enters_sequences`).
-- A subscription that ends leaves them.
CREATE FUNCTION subscriptions_sequences() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM sequences) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM enter_sequences(array_agg(after.subscriber_id), array_agg(after.list_id))
        FROM changed AS after
        WHERE after.status = 'confirmed'
          AND (after.source IS DISTINCT FROM 'import'
               OR current_setting('newsletter.import_enters_sequences', true) = 'on');
        RETURN NULL;
    END IF;
    PERFORM enter_sequences(array_agg(after.subscriber_id), array_agg(after.list_id))
    FROM changed AS after JOIN previous AS before USING (subscriber_id, list_id)
    WHERE after.status = 'confirmed' AND before.status <> 'confirmed'
      AND (after.source IS DISTINCT FROM 'import'
           OR current_setting('newsletter.import_enters_sequences', true) = 'on');
    PERFORM leave_sequences(array_agg(after.subscriber_id), array_agg(after.list_id), 'unsubscribed')
    FROM changed AS after JOIN previous AS before USING (subscriber_id, list_id)
    WHERE after.status = 'unsubscribed' AND before.status <> 'unsubscribed';
    RETURN NULL;
END
$$;
CREATE TRIGGER subscriptions_created_sequences AFTER INSERT ON subscriptions REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION subscriptions_sequences();
CREATE TRIGGER subscriptions_changed_sequences AFTER UPDATE ON subscriptions
    REFERENCING NEW TABLE AS changed OLD TABLE AS previous
    FOR EACH STATEMENT EXECUTE FUNCTION subscriptions_sequences();

-- A suppressed address (any reason) or a blocklisted person leaves every sequence.
CREATE FUNCTION suppressions_leave_sequences() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM leave_sequences(array_agg(subscribers.id), array_agg(NULL::bigint), 'suppressed')
    FROM changed JOIN subscribers ON lower(subscribers.email) = lower(changed.email);
    RETURN NULL;
END
$$;
CREATE TRIGGER suppressions_added_sequences AFTER INSERT ON suppressions REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION suppressions_leave_sequences();
CREATE TRIGGER suppressions_changed_sequences AFTER UPDATE ON suppressions REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION suppressions_leave_sequences();

CREATE FUNCTION subscribers_leave_sequences() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM leave_sequences(array_agg(changed.id), array_agg(NULL::bigint), 'blocklisted')
    FROM changed JOIN previous USING (id)
    WHERE changed.status = 'blocklisted' AND previous.status <> 'blocklisted';
    RETURN NULL;
END
$$;
CREATE TRIGGER subscribers_changed_sequences AFTER UPDATE ON subscribers
    REFERENCING NEW TABLE AS changed OLD TABLE AS previous
    FOR EACH STATEMENT EXECUTE FUNCTION subscribers_leave_sequences();

-- The references. A list's sequences go with it; people go with their subscriber. Members are only written from
-- subscriptions, under the lock that makes deleting subscribers wait for them (migration 0010), and so is an
-- enrollment (services/automations/sequences.py).
CREATE FUNCTION lists_delete_sequences() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sequences WHERE list_id IN (SELECT id FROM removed);
    RETURN NULL;
END
$$;
CREATE TRIGGER lists_delete_sequences AFTER DELETE ON lists REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION lists_delete_sequences();

CREATE FUNCTION subscribers_forget_sequences() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM removed) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(1937072755, 0);
    DELETE FROM sequence_members AS m
    USING sequences, removed
    WHERE m.sequence_id = sequences.id AND m.subscriber_id = removed.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER subscribers_forget_sequences AFTER DELETE ON subscribers REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION subscribers_forget_sequences();

CREATE FUNCTION truncate_sequence_members() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE sequence_members;
    RETURN NULL;
END
$$;
CREATE TRIGGER subscribers_truncate_sequences AFTER TRUNCATE ON subscribers
    FOR EACH STATEMENT EXECUTE FUNCTION truncate_sequence_members();

CREATE FUNCTION truncate_sequences() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE sequences CASCADE;
    RETURN NULL;
END
$$;
CREATE TRIGGER lists_truncate_sequences AFTER TRUNCATE ON lists
    FOR EACH STATEMENT EXECUTE FUNCTION truncate_sequences();
