-- Every sign-up from one address updates the same counter row, and held its lock until the sign-up's commit
-- was flushed to disk: one address's sign-ups could not commit faster than the disk flushes. Counters that
-- write no WAL commit without waiting for a flush, so the lock is held for microseconds; after a crash the
-- counters start again from zero, which a rate limit can afford.
ALTER TABLE rate_limits SET UNLOGGED;
