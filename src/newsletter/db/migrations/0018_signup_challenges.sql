-- The proof-of-work challenges already spent on a sign-up (SPEC section 13, bot protection): a solution is
-- accepted once. A challenge is known by its signature (the HMAC the server gave it) and kept until it
-- expires, after which its solution is refused anyway; expired rows are deleted as new ones arrive.
CREATE TABLE signup_challenges (
    signature text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);

CREATE INDEX signup_challenges_expiry ON signup_challenges (expires_at);
