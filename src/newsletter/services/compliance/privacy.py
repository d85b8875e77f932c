"""The rights of the people on the lists: everything held about them, and being forgotten."""

from __future__ import annotations

from typing import Any

import structlog

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.services.errors import NotFound

log = structlog.get_logger(__name__)


async def export(db: Database, subscriber_id: int) -> dict[str, Any]:
    async with db.connection() as conn:
        document: dict[str, Any] | None = await conn.fetchval(Q.subscriber_export, subscriber_id)
    if document is None:
        raise NotFound(f"subscriber {subscriber_id} does not exist")
    return document


async def erase(db: Database, subscriber_id: int) -> None:
    """Remove every personal datum; past issues keep their counts (their deliveries stay, anonymous)."""
    async with db.transaction() as conn:
        await conn.execute(Q.erasure_begin)
        row = await conn.fetchrow(Q.subscribers_erase, [subscriber_id])
    assert row is not None
    if not row["erased"]:
        raise NotFound(f"subscriber {subscriber_id} does not exist")
    log.info("subscriber erased", subscriber_id=subscriber_id, deliveries_scrubbed=row["deliveries"])


async def purge_unconfirmed(db: Database, older_than_days: int) -> int:
    """Forget, as an erasure does, the people who never confirmed within `older_than_days`."""
    async with db.transaction() as conn:
        stale = [row["id"] for row in await conn.fetch(Q.stale_unconfirmed, older_than_days)]
        if not stale:
            return 0
        await conn.execute(Q.erasure_begin)
        row = await conn.fetchrow(Q.subscribers_erase, stale)
    assert row is not None
    purged: int = row["erased"]
    log.info("unconfirmed sign-ups purged", subscribers=purged, older_than_days=older_than_days)
    return purged
