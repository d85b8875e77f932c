CREATE TABLE api_tokens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    token_hash bytea NOT NULL UNIQUE,
    scope text NOT NULL DEFAULT 'admin' CHECK (scope IN ('admin', 'read')),
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);

-- One row per Idempotency-Key: the request's fingerprint and, once it has run, the response to replay.
CREATE TABLE idempotency_keys (
    token_id bigint NOT NULL REFERENCES api_tokens ON DELETE CASCADE,
    key text NOT NULL,
    fingerprint bytea NOT NULL,
    response_status integer NOT NULL,
    response_body bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (token_id, key)
);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE issues (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject text NOT NULL CHECK (length(subject) BETWEEN 1 AND 500),
    markdown text,
    html text NOT NULL,
    text_body text NOT NULL,
    status text NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'scheduled', 'sending', 'paused', 'sent', 'cancelled')),
    send_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    -- Progress kept current by the statements that change deliveries, so reading it costs one row.
    total_count integer NOT NULL DEFAULT 0,
    pending_count integer NOT NULL DEFAULT 0,
    sent_count integer NOT NULL DEFAULT 0,
    failed_count integer NOT NULL DEFAULT 0,
    suppressed_count integer NOT NULL DEFAULT 0,
    cancelled_count integer NOT NULL DEFAULT 0
);

CREATE INDEX issues_scheduled ON issues (send_at) WHERE status = 'scheduled';

CREATE TABLE issue_lists (
    issue_id bigint NOT NULL REFERENCES issues ON DELETE CASCADE,
    list_id bigint NOT NULL REFERENCES lists ON DELETE CASCADE,
    PRIMARY KEY (issue_id, list_id)
);

ALTER TABLE deliveries ADD COLUMN issue_id bigint REFERENCES issues ON DELETE CASCADE;

-- Each person receives an issue once, whatever crashes or repeats happen around the fan-out.
CREATE UNIQUE INDEX deliveries_issue_subscriber ON deliveries (issue_id, subscriber_id)
    WHERE kind = 'newsletter';
CREATE INDEX deliveries_issue_status ON deliveries (issue_id, status, id);

-- Sending rate shared by every worker: the time from which the next message may go out.
CREATE TABLE send_rate (
    transport text PRIMARY KEY,
    next_free timestamptz NOT NULL
);
