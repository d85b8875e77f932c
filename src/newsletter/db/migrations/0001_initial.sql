CREATE TABLE lists (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    optin text NOT NULL DEFAULT 'double' CHECK (optin IN ('double', 'single')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO lists (slug, name) VALUES ('default', 'Newsletter');

CREATE TABLE subscribers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL,
    name text NOT NULL DEFAULT '',
    attributes jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocklisted')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One subscriber per address whatever its case; the address itself is kept as it was normalized.
CREATE UNIQUE INDEX subscribers_email_key ON subscribers (lower(email));

CREATE TABLE subscriptions (
    subscriber_id bigint NOT NULL REFERENCES subscribers ON DELETE CASCADE,
    list_id bigint NOT NULL REFERENCES lists ON DELETE CASCADE,
    status text NOT NULL CHECK (status IN ('pending', 'confirmed', 'unsubscribed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    unsubscribed_at timestamptz,
    -- Consent evidence: where and how the person asked, and how they confirmed.
    source text NOT NULL DEFAULT 'form',
    signup_ip inet,
    signup_user_agent text,
    confirm_ip inet,
    confirm_user_agent text,
    PRIMARY KEY (subscriber_id, list_id)
);

CREATE INDEX subscriptions_list_status ON subscriptions (list_id, status);

CREATE TABLE confirmation_tokens (
    token_hash bytea PRIMARY KEY,
    subscriber_id bigint NOT NULL,
    list_id bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    FOREIGN KEY (subscriber_id, list_id) REFERENCES subscriptions ON DELETE CASCADE
);

CREATE INDEX confirmation_tokens_subscription ON confirmation_tokens (subscriber_id, list_id);

CREATE TABLE suppressions (
    email text NOT NULL,
    reason text NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'unsubscribe_all', 'manual')),
    detail text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX suppressions_email_key ON suppressions (lower(email));

-- The delivery ledger: one row per email to send, transactional or newsletter.
CREATE TABLE deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('confirmation', 'newsletter', 'test')),
    subscriber_id bigint REFERENCES subscribers ON DELETE SET NULL,
    list_id bigint REFERENCES lists ON DELETE SET NULL,
    recipient text NOT NULL,
    status text NOT NULL DEFAULT 'queued' CHECK (
        status IN ('queued', 'sending', 'sent', 'failed', 'bounced', 'complained', 'suppressed', 'cancelled')
    ),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz,
    -- Set when a lease expired while the row was being sent: the one case where a duplicate is possible.
    reclaimed integer NOT NULL DEFAULT 0,
    last_error text,
    provider_message_id text,
    request_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz
);

CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'queued';
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE status = 'sending';
CREATE INDEX deliveries_subscriber ON deliveries (subscriber_id);

-- Fixed-window counters shared by every process (sign-up limits).
CREATE TABLE rate_limits (
    key text PRIMARY KEY,
    window_seconds integer NOT NULL,
    window_start timestamptz NOT NULL,
    hits integer NOT NULL
);
