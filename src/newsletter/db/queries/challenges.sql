-- name: challenge_spend
-- Records a challenge as spent ($1 its signature, $2 when it expires); true when it was not spent before.
-- The spent challenges that have expired since are deleted on the way: they can no longer be replayed.
WITH expired AS (
    DELETE FROM signup_challenges WHERE expires_at < now()
)
INSERT INTO signup_challenges (signature, expires_at) VALUES ($1, $2)
ON CONFLICT DO NOTHING
RETURNING true;
