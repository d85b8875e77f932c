-- People who run the service from the browser, and their sessions.
CREATE TABLE admin_users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    -- argon2id, in the PHC string format (algorithm, parameters and salt travel with the hash).
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz
);

CREATE UNIQUE INDEX admin_users_email_key ON admin_users (lower(email));

-- A session id is 256 random bits that only the browser holds: the table keeps its SHA-256, so a leak of the
-- table opens no session.
CREATE TABLE admin_sessions (
    id_hash bytea PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES admin_users ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    ip inet,
    user_agent text
);

CREATE INDEX admin_sessions_user ON admin_sessions (user_id);
CREATE INDEX admin_sessions_expires ON admin_sessions (expires_at);

-- The dashboard's growth chart counts the sign-ups of the last days.
CREATE INDEX subscribers_created ON subscribers (created_at);
