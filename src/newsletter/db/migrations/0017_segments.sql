-- Segments (SPEC section 13): a saved filter over people in the segment language (domain/segments.py). The
-- expression is kept as written and compiled when it is used, so that it always reads the schema of the day.
CREATE TABLE segments (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    expression text NOT NULL CHECK (length(expression) BETWEEN 1 AND 4000),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX segments_name_key ON segments (lower(name));

-- An issue goes to the people confirmed in its lists who match its segment, if it has one. The expression it
-- was sent with is kept on the issue when it starts, so that a segment edited or deleted later does not
-- change what the issue says of its audience. A segment used by an issue not yet started cannot be deleted
-- (services/audience/segments.py); deleting one that only sent issues used leaves their copy.
ALTER TABLE issues
    ADD COLUMN segment_id bigint REFERENCES segments ON DELETE SET NULL,
    ADD COLUMN segment_expression text;
CREATE INDEX issues_segment ON issues (segment_id) WHERE segment_id IS NOT NULL;

-- Equality on attribute paths (`attributes.plan = "pro"` compiles to containment, `attributes @> $1`) is
-- served by this index; the other comparisons on attributes read the rows the rest of the filter leaves.
CREATE INDEX subscribers_attributes ON subscribers USING gin (attributes jsonb_path_ops);
