"""The suppression list as the admin API manages it: addresses that must never be mailed again."""

from __future__ import annotations

from typing import Any

import asyncpg

from newsletter.db.queries import query
from newsletter.domain.subscriber import SubscriberEmail
from newsletter.services.errors import NotFound

VIEW_FIELDS = ("id", "email", "reason", "detail", "created_at")


def _view(row: asyncpg.Record) -> dict[str, Any]:
    return {key: row[key] for key in VIEW_FIELDS}


async def suppression_page(
    conn: asyncpg.Connection, *, after: int | None, reason: str | None, search: str | None, limit: int
) -> list[dict[str, Any]]:
    pattern = None
    if search:
        pattern = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = await conn.fetch(query("suppression_page"), after, reason, pattern, limit)
    return [_view(row) for row in rows]


async def suppress(
    conn: asyncpg.Connection, email: SubscriberEmail, reason: str, detail: str
) -> dict[str, Any]:
    """Suppress an address; one suppressed already stays as it is (see `suppression_add`)."""
    await conn.execute(query("suppression_add"), email.value, reason, detail)
    row = await conn.fetchrow(query("suppression_get"), email.value)
    return _view(row)


async def lift(conn: asyncpg.Connection, email: str) -> None:
    if await conn.fetchval(query("suppression_delete"), email) is None:
        raise NotFound(f"{email} is not suppressed")
