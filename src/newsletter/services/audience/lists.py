"""Lists: the one read model the API and the admin pages share, and their changes.

Counting a list's subscribers reads every counted subscription, so counts are exact up to a budget of rows per
view and the planner's estimates beyond it (SPEC section 8: no COUNT(*) over millions per view); an estimate
says so and is shown to three significant digits, so that it does not pass for a count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.subscriber import InvalidInput, ListSlug
from newsletter.domain.vocabulary import OptIn, Visibility
from newsletter.services.errors import Conflict, Invalid, NotFound

# Rows counted exactly for each set of counts a view shows (the lists' subscriptions, the days' sign-ups), the
# smallest first; beyond, the planner's estimates are shown.
EXACT_COUNT_BUDGET = 50_000
DEFAULT_LIST = "default"
FIELDS = ("id", "slug", "name", "description", "optin", "visibility", "created_at", "updated_at")


def shown_count(value: int, estimated: bool) -> int:
    """An estimate to three significant digits, so that it does not pass for a count."""
    if not estimated:
        return value
    digits = len(str(value))
    return round(value, -(digits - 3)) if digits > 3 else value


def _view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        **{key: row[key] for key in FIELDS},
        "subscribers": {
            "confirmed": shown_count(row["confirmed"], row["confirmed_estimated"]),
            "pending": shown_count(row["pending"], row["pending_estimated"]),
            "confirmed_estimated": row["confirmed_estimated"],
            "pending_estimated": row["pending_estimated"],
        },
    }


async def _counted(conn: asyncpg.Connection, list_id: int | None) -> list[asyncpg.Record]:
    async with conn.transaction():
        await conn.execute(Q.without_jit)
        rows: list[asyncpg.Record] = await conn.fetch(Q.lists_counted, EXACT_COUNT_BUDGET, list_id)
    return rows


async def all_lists(db: Database) -> list[dict[str, Any]]:
    """Every list with its confirmed and pending subscribers, counted or, when counting costs, estimated."""
    async with db.connection() as conn:
        return [_view(row) for row in await _counted(conn, None)]


async def get_list(db: Database, list_id: int) -> dict[str, Any]:
    async with db.connection() as conn:
        rows = await _counted(conn, list_id)
    if not rows:
        raise NotFound(f"list {list_id} does not exist")
    return _view(rows[0])


async def list_names(db: Database) -> list[dict[str, Any]]:
    """Every list's id, slug and name, without the counts (for menus and forms)."""
    async with db.connection() as conn:
        return [dict(row) for row in await conn.fetch(Q.list_names)]


async def create_list(
    db: Database,
    slug: ListSlug,
    name: str,
    description: str,
    optin: OptIn = OptIn.DOUBLE,
    visibility: Visibility = Visibility.PRIVATE,
) -> dict[str, Any]:
    async with db.transaction() as conn:
        list_id = await conn.fetchval(Q.list_insert, slug.value, name, description, optin, visibility)
        if list_id is None:
            raise Conflict(f"a list with slug {slug.value!r} exists already")
        return await get_list(db, list_id)


async def update_list(
    db: Database,
    list_id: int,
    name: str | None,
    description: str | None,
    optin: OptIn | None,
    visibility: Visibility | None,
) -> dict[str, Any]:
    async with db.transaction() as conn:
        if await conn.fetchval(Q.list_update, list_id, name, description, optin, visibility) is None:
            raise NotFound(f"list {list_id} does not exist")
        return await get_list(db, list_id)


async def delete_list(db: Database, list_id: int) -> None:
    async with db.transaction() as conn:
        if await conn.fetchval(Q.list_delete, list_id) is None:
            await get_list(db, list_id)
            raise Conflict(f"the {DEFAULT_LIST} list cannot be deleted")


async def list_id_of(conn: asyncpg.Connection, raw_slug: str) -> int:
    """The id of the list with this slug; NotFound for an unknown one, however malformed."""
    try:
        slug = ListSlug.parse(raw_slug).value
    except InvalidInput:
        slug = None
    list_id: int | None = await conn.fetchval(Q.list_by_slug, slug) if slug else None
    if list_id is None:
        raise NotFound(f"list {raw_slug!r} does not exist")
    return list_id


async def list_ids(conn: asyncpg.Connection, slugs: Sequence[str]) -> list[int]:
    """The ids of these lists; Invalid naming the unknown ones."""
    rows = await conn.fetch(Q.lists_by_slug, list(slugs))
    unknown = sorted(set(slugs) - {row["slug"] for row in rows})
    if unknown:
        raise Invalid(f"lists: unknown list {', '.join(unknown)}")
    return [row["id"] for row in rows]
