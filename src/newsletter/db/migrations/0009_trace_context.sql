-- The W3C trace context of the request that queued an email (NULL when tracing is off), so that the worker's
-- send continues that request's trace. Newsletter deliveries share their issue's.
ALTER TABLE deliveries ADD COLUMN traceparent text;
ALTER TABLE issues ADD COLUMN traceparent text;
