-- The mailability rule, once: which suppressions stop an email of a kind. Every suppression stops a newsletter
-- and a test copy; an unsubscribe from every list does not stop a confirmation email, which answers a new,
-- explicit request (confirming it lifts that suppression). Used as
--     NOT EXISTS (SELECT FROM suppressions_stopping('newsletter') AS s WHERE s.address = lower(recipient))
-- A set-returning SQL function of one SELECT is inlined by the planner, so each query keeps its own plan (an
-- anti-join on the lower(email) index, or a hash over the table for a fan-out).
CREATE FUNCTION suppressions_stopping(kind text) RETURNS TABLE (address text, reason text)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT lower(email), reason FROM suppressions
    WHERE kind <> 'confirmation' OR reason <> 'unsubscribe_all'
$$;
