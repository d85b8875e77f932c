"""Lists and subscribers, as the admin API manages them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from newsletter.db.queries import query
from newsletter.domain.subscriber import SubscriberEmail, SubscriberName
from newsletter.services.errors import Conflict, Invalid, NotFound
from newsletter.tracing import current_traceparent


def _list_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "slug": row["slug"],
        "name": row["name"],
        "description": row["description"],
        "optin": row["optin"],
        "visibility": row["visibility"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "subscribers": {"confirmed": row["confirmed"], "pending": row["pending"]},
    }


async def all_lists(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [_list_view(row) for row in await conn.fetch(query("list_all"))]


async def get_list(conn: asyncpg.Connection, list_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(query("list_get"), list_id)
    if row is None:
        raise NotFound(f"list {list_id} does not exist")
    return _list_view(row)


async def create_list(
    conn: asyncpg.Connection, slug: str, name: str, description: str, optin: str, visibility: str
) -> dict[str, Any]:
    list_id = await conn.fetchval(query("list_insert"), slug, name, description, optin, visibility)
    if list_id is None:
        raise Conflict(f"a list with slug {slug!r} exists already")
    return await get_list(conn, list_id)


async def update_list(
    conn: asyncpg.Connection,
    list_id: int,
    name: str | None,
    description: str | None,
    optin: str | None,
    visibility: str | None,
) -> dict[str, Any]:
    if await conn.fetchval(query("list_update"), list_id, name, description, optin, visibility) is None:
        raise NotFound(f"list {list_id} does not exist")
    return await get_list(conn, list_id)


async def delete_list(conn: asyncpg.Connection, list_id: int) -> None:
    if await conn.fetchval(query("list_delete"), list_id) is None:
        await get_list(conn, list_id)
        raise Conflict("the default list cannot be deleted")


async def _list_ids(conn: asyncpg.Connection, slugs: Sequence[str]) -> list[int]:
    rows = await conn.fetch(query("lists_by_slug"), list(slugs))
    unknown = sorted(set(slugs) - {row["slug"] for row in rows})
    if unknown:
        raise Invalid(f"lists: unknown list {', '.join(unknown)}")
    return [row["id"] for row in rows]


async def get_subscriber(conn: asyncpg.Connection, subscriber_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(query("subscriber_get"), subscriber_id)
    if row is None:
        raise NotFound(f"subscriber {subscriber_id} does not exist")
    return {**_subscriber_view(row), "subscriptions": row["subscriptions"]}


def _subscriber_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        key: row[key] for key in ("id", "email", "name", "status", "attributes", "created_at", "updated_at")
    }


async def create_subscriber(
    conn: asyncpg.Connection,
    email: SubscriberEmail,
    name: SubscriberName,
    attributes: dict[str, Any],
    lists: Sequence[str],
    status: str,
    request_id: str | None,
) -> dict[str, Any]:
    """Add a person; `status='confirmed'` records them as confirmed already (moving from another system)."""
    list_ids = await _list_ids(conn, lists)
    subscriber_id = await conn.fetchval(query("subscriber_insert"), email.value, name.value, attributes)
    if subscriber_id is None:
        existing = await conn.fetchval(query("subscriber_by_email"), email.value)
        raise Conflict(f"subscriber {existing} has this address already")
    await conn.execute(
        query("subscriptions_add"), subscriber_id, list_ids, status, "api", request_id, current_traceparent()
    )
    return await get_subscriber(conn, subscriber_id)


async def update_subscriber(
    conn: asyncpg.Connection,
    subscriber_id: int,
    name: SubscriberName | None,
    attributes: dict[str, Any] | None,
    status: str | None,
) -> dict[str, Any]:
    updated = await conn.fetchval(
        query("subscriber_update"), subscriber_id, name.value if name else None, attributes, status
    )
    if updated is None:
        raise NotFound(f"subscriber {subscriber_id} does not exist")
    return await get_subscriber(conn, subscriber_id)


async def subscriber_page(
    conn: asyncpg.Connection,
    *,
    after: int | None,
    list_slug: str | None,
    status: str | None,
    search: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    pattern = None
    if search:
        pattern = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = await conn.fetch(query("subscriber_page"), after, list_slug, status, pattern, limit)
    return [_subscriber_view(row) for row in rows]


async def subscriber_deliveries(
    conn: asyncpg.Connection, subscriber_id: int, limit: int
) -> list[dict[str, Any]]:
    """The latest emails to one person, newest first."""
    return [dict(row) for row in await conn.fetch(query("subscriber_deliveries"), subscriber_id, limit)]


async def unsubscribe_everywhere(conn: asyncpg.Connection, subscriber_id: int) -> int:
    """End every subscription of a person (an operator acting on their request) and suppress the address, as
    their own unsubscribe from every list does; returns how many subscriptions ended."""
    await get_subscriber(conn, subscriber_id)
    return len(await conn.fetch(query("subscriber_unsubscribe_all"), subscriber_id))


async def list_names(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every list's id, slug and name, without the counts (for menus and forms)."""
    return [dict(row) for row in await conn.fetch(query("list_names"))]
