-- The time that retries, give-ups and automations are reckoned in: now(), shifted only by the tests, which
-- move it days ahead to test a delay of days without waiting. The shift is read once per statement.
CREATE TABLE clock (
    single boolean PRIMARY KEY DEFAULT true CHECK (single),
    shift interval NOT NULL DEFAULT '0'
);
INSERT INTO clock DEFAULT VALUES;

CREATE FUNCTION newsletter_now() RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT now() + (SELECT shift FROM clock)
$$;

-- Outgoing webhooks (SPEC section 11). An endpoint receives the events of the types it names ('*': all), each
-- at least once, signed with its secret as the Standard Webhooks specification says. While it fails, it is
-- `failing_since` the first failure after its last success; while it is down (no answer, a timeout, a 5xx,
-- a 429) nothing more is sent to it until `retry_at`, so that what waits goes out in order once it is back.
CREATE TABLE webhook_endpoints (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url text NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    event_types text[] NOT NULL CHECK (cardinality(event_types) BETWEEN 1 AND 100),
    active boolean NOT NULL DEFAULT true,
    secret text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    failing_since timestamptz,
    retry_at timestamptz,
    disabled_at timestamptz,
    disabled_reason text
);

-- One row per event and endpoint: the ledger of webhooks, claimed under a lease as emails are.
CREATE TABLE webhook_deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id bigint NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    event_id bigint NOT NULL,
    status text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT newsletter_now(),
    lease_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT newsletter_now(),
    delivered_at timestamptz,
    last_status integer,
    last_error text,
    UNIQUE (endpoint_id, event_id)
);

-- What waits, per endpoint in event order (the claim walks it; the age of the oldest is read from it).
CREATE INDEX webhook_deliveries_waiting ON webhook_deliveries (endpoint_id, event_id) INCLUDE (created_at)
    WHERE status = 'queued';
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (endpoint_id, lease_until)
    WHERE status = 'sending';
CREATE INDEX webhook_deliveries_created ON webhook_deliveries USING brin (created_at);

-- Every request made, with its answer: what an integrator looks at when their endpoint misbehaves.
CREATE TABLE webhook_attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id bigint NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    delivery_id bigint NOT NULL,
    event_id bigint NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL,
    status_code integer,
    error text
);

CREATE INDEX webhook_attempts_by_endpoint ON webhook_attempts (endpoint_id, id);
CREATE INDEX webhook_attempts_at ON webhook_attempts USING brin (attempted_at);

-- Each event becomes a delivery to each active endpoint that wants its type, in the event's transaction. An
-- endpoint's test event goes to that endpoint alone (services/integrations/webhooks.py).
CREATE FUNCTION events_to_webhooks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM webhook_endpoints WHERE active) THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries (endpoint_id, event_id)
    SELECT endpoint.id, added.id
    FROM added
    JOIN webhook_endpoints AS endpoint
      ON endpoint.active AND (added.type = ANY (endpoint.event_types) OR '*' = ANY (endpoint.event_types))
    WHERE added.type <> 'webhook.test'
    ORDER BY added.id, endpoint.id;
    IF FOUND THEN
        PERFORM pg_notify('newsletter_webhooks', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_to_webhooks AFTER INSERT ON events REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION events_to_webhooks();
