"""The suppression list: addresses that must never be mailed again, and why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.subscriber import SubscriberEmail
from newsletter.domain.vocabulary import SuppressionReason
from newsletter.services.errors import NotFound

VIEW_FIELDS = ("id", "email", "reason", "detail", "created_at")


def _view(row: asyncpg.Record) -> dict[str, Any]:
    return {key: row[key] for key in VIEW_FIELDS}


async def suppression_page(
    db: Database, *, after: int | None, reason: str | None, search: str | None, limit: int
) -> list[dict[str, Any]]:
    pattern = None
    if search:
        pattern = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    async with db.connection() as conn:
        rows = await conn.fetch(Q.suppression_page, after, reason, pattern, limit)
    return [_view(row) for row in rows]


async def suppress(
    db: Database, email: SubscriberEmail, reason: SuppressionReason, detail: str
) -> dict[str, Any]:
    """Suppress an address; one suppressed already stays as it is (see `suppression_add`)."""
    async with db.transaction() as conn:
        await conn.execute(Q.suppression_add, email.value, reason, detail)
        row = await conn.fetchrow(Q.suppression_get, email.value)
    return _view(row)


async def lift(db: Database, email: str) -> None:
    async with db.transaction() as conn:
        if await conn.fetchval(Q.suppression_delete, email) is None:
            raise NotFound(f"{email} is not suppressed")


async def suppressed_among(db: Database, addresses: Sequence[str]) -> dict[str, str]:
    """Which of these addresses are suppressed, each with the reason."""
    async with db.connection() as conn:
        rows = await conn.fetch(Q.suppressed_among, list(addresses))
    return {row["recipient"]: row["reason"] for row in rows}
