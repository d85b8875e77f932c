"""The event record (SPEC section 11): written by the database in the same transaction as each change
(migration 0014), read here by cursor, and trimmed after the retention period."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import structlog

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.vocabulary import EventType

log = structlog.get_logger(__name__)

TRIM_BATCH = 50_000


async def event_page(
    db: Database, *, after: int | None, types: Collection[EventType] | None, limit: int
) -> list[dict[str, Any]]:
    """The events after the event `after`, oldest first; an event that commits late is never skipped."""
    async with db.connection() as conn:
        rows = await conn.fetch(Q.events_page, after, sorted(types) if types else None, limit)
    return [dict(row) for row in rows]


async def recent_events(
    db: Database, *, before: int | None, types: Collection[EventType] | None, limit: int
) -> list[dict[str, Any]]:
    """The latest events, newest first, before the event `before`: the record as an operator browses it."""
    async with db.connection() as conn:
        rows = await conn.fetch(Q.events_recent, before, sorted(types) if types else None, limit)
    return [dict(row) for row in rows]


async def trim_events(db: Database, retention_days: int) -> int:
    """Forget the events past the retention period, a batch at a time (each batch its own transaction)."""
    trimmed = 0
    while True:
        status = await db.execute(Q.events_trim, retention_days, TRIM_BATCH)
        count = int(status.split()[-1])
        trimmed += count
        if count < TRIM_BATCH:
            break
    if trimmed:
        log.info("events past the retention period trimmed", events=trimmed, retention_days=retention_days)
    return trimmed


async def events_written(db: Database) -> int:
    """How many events have been written so far (the record's last id)."""
    return int(await db.fetchval(Q.events_written) or 0)
