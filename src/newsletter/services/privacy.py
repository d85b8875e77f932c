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
    scrubbed = await conn.fetchval(query("subscriber_erase"), subscriber_id)
    if scrubbed is None:
        raise NotFound(f"subscriber {subscriber_id} does not exist")
    log.info("subscriber erased", subscriber_id=subscriber_id, deliveries_scrubbed=scrubbed)


async def purge_unconfirmed(pool: asyncpg.Pool, older_than_days: int) -> int:
    purged: int = await pool.fetchval(query("purge_unconfirmed"), older_than_days)
    if purged:
        log.info("unconfirmed sign-ups purged", subscribers=purged, older_than_days=older_than_days)
    return purged
