-- Lists are open to public sign-up (the form and POST /subscriptions) or not. A private list takes people
-- only from the operator (API, admin, import). Lists that exist keep the sign-ups they took, except single
-- opt-in ones: a public single opt-in list lets anyone subscribe any address without a confirmation, so it
-- must be opened on purpose. New lists are private until opened.
ALTER TABLE lists ADD COLUMN visibility text NOT NULL DEFAULT 'private'
    CHECK (visibility IN ('public', 'private'));
UPDATE lists SET visibility = 'public' WHERE optin = 'double' OR slug = 'default';

-- A spreadsheet runs a cell that starts with =, +, -, @, a tab or a carriage return as a formula (OWASP, "CSV
-- injection"). An export puts an apostrophe before such a cell, and before one that is already apostrophes
-- followed by one of those characters, so that the import can take exactly one apostrophe off again: the
-- value that comes back is the value that went out.
CREATE FUNCTION csv_cell(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value ~ '^''*[=+@\t\r-]' THEN '''' || value ELSE value END
$$;

-- An erased person's address leaves no trace, but a complaint, a hard bounce or an unsubscribe from every list
-- must outlive the erasure: the address would otherwise be mailed again the next time it is imported. What stays is a keyed
-- hash of the address with the reason; the key is random, made here once, and lives in the database only.
-- When the address comes back (a sign-up, an import, the API), its suppression comes back with it.
CREATE TABLE erasure_key (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    key bytea NOT NULL
);
INSERT INTO erasure_key (key)
VALUES (decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));

CREATE FUNCTION erased_address_hash(email text) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT sha256((SELECT key FROM erasure_key) || convert_to(lower(email), 'UTF8'))
$$;

CREATE TABLE erased_suppressions (
    address_hash bytea PRIMARY KEY,
    reason text NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'unsubscribe_all', 'manual')),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION subscribers_restore_suppressions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM erased_suppressions) THEN
        RETURN NULL;  -- nearly always: no hash to compute
    END IF;
    INSERT INTO suppressions (email, reason, detail)
    SELECT added.email, erased.reason, 'suppressed before an erasure of this address'
    FROM added
    JOIN erased_suppressions AS erased ON erased.address_hash = erased_address_hash(added.email)
    ON CONFLICT ((lower(email))) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER subscribers_restore_suppressions AFTER INSERT ON subscribers
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION subscribers_restore_suppressions();

-- Stored API responses were written as JSON with non-ASCII characters escaped (\u00f6): an erasure looking for
-- the address as it is did not find them. Responses are now stored unescaped; this finds the older ones.
CREATE FUNCTION json_ascii_escaped(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(string_agg(
        CASE WHEN ascii(c) < 128 THEN c
             WHEN ascii(c) < 65536 THEN '\u' || lpad(to_hex(ascii(c)), 4, '0')
             ELSE '\u' || to_hex(55296 + ((ascii(c) - 65536) >> 10))
                  || '\u' || to_hex(56320 + ((ascii(c) - 65536) & 1023))
        END, '' ORDER BY n), '')
    FROM regexp_split_to_table(value, '') WITH ORDINALITY AS chars(c, n)
$$;
