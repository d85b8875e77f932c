"""What the admin pages show: subscribers per list, growth, the latest issues with their progress, and the
subscribers page, each read in a way that stays quick with a million subscribers (bench/admin_pages.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from newsletter.db.queries import query
from newsletter.services import issues
from newsletter.services.errors import NotFound

GROWTH_DAYS = 30
# Rows counted exactly for each set of counts a page shows (the lists' subscriptions, the days' sign-ups), the
# smallest first; beyond, the planner's estimates are shown.
EXACT_COUNT_BUDGET = 50_000
# A search by beginning, or the blocklisted filter, first looks up at most this many people by index; more,
# and so many match that walking the table in id order finds a page sooner.
LOOKUP_LIMIT = 2_000
PERSON_STATUSES = ("active", "blocklisted")
SUBSCRIPTION_STATUSES = ("pending", "confirmed", "unsubscribed")
LIST_FIELDS = ("id", "slug", "name", "description", "optin", "visibility", "created_at", "updated_at")


@dataclass(frozen=True, slots=True)
class Day:
    day: date
    added: int
    estimated: bool


def progress(issue: dict[str, Any]) -> int:
    """Percent of an issue's deliveries that are settled, from its counters (never from the ledger)."""
    counts = issue["counts"]
    if not counts["total"]:
        return 100 if issue["status"] == "sent" else 0
    return int(100 * (counts["total"] - counts["pending"]) / counts["total"])


async def dashboard(conn: asyncpg.Connection) -> dict[str, Any]:
    async with conn.transaction():
        await conn.execute(query("without_jit"))
        rows = await conn.fetch(query("dashboard_growth"), GROWTH_DAYS, EXACT_COUNT_BUDGET)
        counted = await conn.fetch(query("lists_counted"), EXACT_COUNT_BUDGET, None)
    growth = [Day(row["day"], _shown_count(row["added"], row["estimated"]), row["estimated"]) for row in rows]
    recent = await issues.list_issues(conn, before=None, status=None, limit=5)
    return {
        "lists": [_list_view(row) for row in counted],
        "growth": growth,
        "growth_max": max((day.added for day in growth), default=0),
        "issues": [{**issue, "progress": progress(issue)} for issue in recent],
    }


def _shown_count(value: int, estimated: bool) -> int:
    """An estimate to three significant digits, so that it does not pass for a count."""
    if not estimated:
        return value
    digits = len(str(value))
    return round(value, -(digits - 3)) if digits > 3 else value


def _list_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        **{key: row[key] for key in LIST_FIELDS},
        "subscribers": {
            "confirmed": _shown_count(row["confirmed"], row["confirmed_estimated"]),
            "pending": _shown_count(row["pending"], row["pending_estimated"]),
            "confirmed_estimated": row["confirmed_estimated"],
            "pending_estimated": row["pending_estimated"],
        },
    }


async def _lists_counted(conn: asyncpg.Connection, list_id: int | None) -> list[asyncpg.Record]:
    async with conn.transaction():
        await conn.execute(query("without_jit"))
        rows: list[asyncpg.Record] = await conn.fetch(query("lists_counted"), EXACT_COUNT_BUDGET, list_id)
    return rows


async def lists(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every list with its confirmed and pending subscribers, counted or, when counting costs, estimated."""
    return [_list_view(row) for row in await _lists_counted(conn, None)]


async def get_list(conn: asyncpg.Connection, list_id: int) -> dict[str, Any]:
    rows = await _lists_counted(conn, list_id)
    if not rows:
        raise NotFound(f"list {list_id} does not exist")
    return _list_view(rows[0])


async def subscriber_page(
    conn: asyncpg.Connection,
    *,
    after: int | None,
    list_id: int | None,
    status: str | None,
    search: str | None,
    contains: bool,
    limit: int,
) -> list[dict[str, Any]]:
    """A page of subscribers in id order after the cursor `after`.

    `status` is a person's (active, blocklisted) or a subscription's (in `list_id`, or in any list); `search`
    matches the beginning of the address or the name, or anywhere in them when `contains` (which walks the
    table, slow when few people match). Each filter starts from an index when it picks out few people, and
    walks the table in id order, checking each person, when it picks out many.
    """
    person_status = status if status in PERSON_STATUSES else None
    subscription_status = status if status in SUBSCRIPTION_STATUSES else None
    pattern = None
    candidates: list[int] | None = None
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        if contains:
            pattern = f"%{escaped}%"
        else:
            found = await conn.fetchrow(query("admin_subscribers_beginning"), search, LOOKUP_LIMIT)
            if max(len(found["by_email"]), len(found["by_name"])) < LOOKUP_LIMIT:
                candidates = sorted(set(found["by_email"]) | set(found["by_name"]))
            else:
                pattern = f"{escaped}%"
    elif person_status == "blocklisted":
        found_ids: list[int] = await conn.fetchval(
            query("admin_subscribers_blocklisted"), after, LOOKUP_LIMIT
        )
        if len(found_ids) < LOOKUP_LIMIT:
            candidates = found_ids
    if candidates is not None:
        chosen = [candidate for candidate in candidates if after is None or candidate > after]
        rows = await conn.fetch(
            query("admin_subscribers_among"),
            after,
            person_status,
            chosen,
            limit,
            list_id,
            subscription_status,
        )
    elif list_id is not None or subscription_status is not None:
        rows = await conn.fetch(
            query("admin_subscribers_in_lists"),
            after,
            person_status,
            pattern,
            limit,
            list_id,
            subscription_status,
        )
    else:
        rows = await conn.fetch(query("admin_subscribers"), after, person_status, pattern, limit)
    return [dict(row) for row in rows]


async def recent_events(conn: asyncpg.Connection, *, before: int | None, limit: int) -> list[dict[str, Any]]:
    """Bounces and complaints reported by providers and bounce mailboxes, newest first."""
    return [dict(row) for row in await conn.fetch(query("events_recent"), before, limit)]


async def suppressed_among(conn: asyncpg.Connection, addresses: Sequence[str]) -> dict[str, str]:
    """Which of these addresses are suppressed, each with the reason."""
    rows = await conn.fetch(query("suppressed_among"), list(addresses))
    return {row["recipient"]: row["reason"] for row in rows}


async def failed_and_suppressed(conn: asyncpg.Connection, issue_id: int) -> int:
    """How many of an issue's failed deliveries a retry cannot send: their address is suppressed now.

    A refusal such as 550 suppresses the address it names, so a retried delivery to it would only be marked
    suppressed, and could not be retried again; the operator lifts the suppression first.
    """
    count: int = await conn.fetchval(query("issue_failed_suppressed"), issue_id)
    return count
