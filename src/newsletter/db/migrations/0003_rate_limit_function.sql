-- Counts one hit against each key (windows in seconds, in the same order) and returns, for each key, the hits
-- in its current window and the seconds until that window ends. Keys are locked in sorted order so that
-- concurrent callers never deadlock. PL/pgSQL, so that its plan is kept for the connection's lifetime.
CREATE FUNCTION hit_rate_limits(keys text[], windows integer[])
RETURNS TABLE (key text, hits integer, wait_seconds float8)
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    RETURN QUERY
    INSERT INTO rate_limits AS counter (key, window_seconds, window_start, hits)
    SELECT hit.key, hit.seconds, now(), 1 FROM unnest(keys, windows) AS hit(key, seconds)
    ORDER BY hit.key
    ON CONFLICT ON CONSTRAINT rate_limits_pkey DO UPDATE SET
        hits = CASE WHEN counter.window_start <= now() - make_interval(secs => excluded.window_seconds)
                    THEN 1 ELSE counter.hits + 1 END,
        window_start = CASE WHEN counter.window_start <= now() - make_interval(secs => excluded.window_seconds)
                            THEN now() ELSE counter.window_start END,
        window_seconds = excluded.window_seconds
    RETURNING counter.key, counter.hits,
              extract(epoch FROM counter.window_start + make_interval(secs => counter.window_seconds) - now())::float8;
END
$$;
