-- What mailbox providers and bounce messages report after a message has left: bounces and complaints. Each
-- report is stored once, keyed by the reporter's own id for it, so a webhook delivered again (providers retry
-- until they see a 2xx) or a bounce mailbox read twice changes nothing the second time.
CREATE TABLE delivery_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider text NOT NULL CHECK (provider IN ('ses', 'sendgrid', 'postmark', 'dsn')),
    provider_event_id text NOT NULL CHECK (length(provider_event_id) BETWEEN 1 AND 500),
    kind text NOT NULL CHECK (kind IN ('hard_bounce', 'soft_bounce', 'complaint')),
    email text NOT NULL,
    -- No foreign key, as for the ledger itself: the event outlives the delivery it names.
    delivery_id bigint,
    detail text NOT NULL DEFAULT '',
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_event_id)
);

-- Soft bounces suppress an address once enough of them happen within a window: counted per address and time.
CREATE INDEX delivery_events_soft_bounces ON delivery_events (lower(email), occurred_at)
    WHERE kind = 'soft_bounce';

-- The suppressions API pages by id, as every other list in the API does.
ALTER TABLE suppressions ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
