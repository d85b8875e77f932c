"""The rights of the people on the lists: everything held about them, and being forgotten."""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog

from newsletter.db.queries import query
from newsletter.services.errors import NotFound

log = structlog.get_logger(__name__)


async def export(conn: asyncpg.Connection, subscriber_id: int) -> dict[str, Any]:
    document: dict[str, Any] | None = await conn.fetchval(query("subscriber_export"), subscriber_id)
    if document is None:
        raise NotFound(f"subscriber {subscriber_id} does not exist")
    return document


async def erase(conn: asyncpg.Connection, subscriber_id: int) -> None:
    """Remove every personal datum; past issues keep their counts (their deliveries stay, anonymous)."""
    row = await conn.fetchrow(query("subscribers_erase"), [subscriber_id])
    assert row is not None
    if not row["erased"]:
        raise NotFound(f"subscriber {subscriber_id} does not exist")
    log.info("subscriber erased", subscriber_id=subscriber_id, deliveries_scrubbed=row["deliveries"])


async def purge_unconfirmed(pool: asyncpg.Pool, older_than_days: int) -> int:
    """Forget, as an erasure does, the people who never confirmed within `older_than_days`."""
    async with pool.acquire() as conn, conn.transaction():
        stale = [row["id"] for row in await conn.fetch(query("stale_unconfirmed"), older_than_days)]
        if not stale:
            return 0
        row = await conn.fetchrow(query("subscribers_erase"), stale)
    assert row is not None
    purged: int = row["erased"]
    log.info("unconfirmed sign-ups purged", subscribers=purged, older_than_days=older_than_days)
    return purged
