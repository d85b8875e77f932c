-- The sign-up funnel on the dashboard (SPEC section 13): per list and day, the sign-ups (subscriptions made
-- that day) and the confirmations (subscriptions confirmed that day). An import's people are neither: they
-- come in confirmed, by the operator, and a million of them would drown the rate; so both are read from
-- partial indexes that leave imported subscriptions out, which an import does not write to (its speed stays
-- as it was) and a sign-up writes one entry to (two once confirmed).
CREATE INDEX subscriptions_signed_up ON subscriptions (created_at, list_id) WHERE source <> 'import';
CREATE INDEX subscriptions_confirmed ON subscriptions (confirmed_at, list_id)
    WHERE source <> 'import' AND confirmed_at IS NOT NULL;

-- A day's counts, once the day is past, are kept here instead of being counted again on every view, as
-- signups_per_day keeps the chart of new subscribers (migration 0011): {"<list id>": [sign-ups,
-- confirmations]}, the lists with neither left out. A record of what happened: people erased or lists
-- deleted later stay counted on their day.
CREATE TABLE funnel_per_day (
    day date PRIMARY KEY,
    counts jsonb NOT NULL
);
