"""What the admin dashboard shows: subscribers per list, growth, and the latest issues with their progress."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from newsletter.db.queries import query
from newsletter.services import audience, issues

GROWTH_DAYS = 30


@dataclass(frozen=True, slots=True)
class Day:
    day: date
    added: int


def progress(issue: dict[str, Any]) -> int:
    """Percent of an issue's deliveries that are settled, from its counters (never from the ledger)."""
    counts = issue["counts"]
    if not counts["total"]:
        return 100 if issue["status"] == "sent" else 0
    return int(100 * (counts["total"] - counts["pending"]) / counts["total"])


async def dashboard(conn: asyncpg.Connection) -> dict[str, Any]:
    rows = await conn.fetch(query("dashboard_growth"), GROWTH_DAYS)
    added = {row["day"]: row["added"] for row in rows}
    today = datetime.now(UTC).date()
    growth = [
        Day(day, added.get(day, 0))
        for day in (today - timedelta(days=GROWTH_DAYS - 1 - offset) for offset in range(GROWTH_DAYS))
    ]
    recent = await issues.list_issues(conn, before=None, status=None, limit=5)
    return {
        "lists": await audience.all_lists(conn),
        "growth": growth,
        "growth_max": max((day.added for day in growth), default=0),
        "issues": [{**issue, "progress": progress(issue)} for issue in recent],
    }


async def recent_events(conn: asyncpg.Connection, *, before: int | None, limit: int) -> list[dict[str, Any]]:
    """Bounces and complaints reported by providers and bounce mailboxes, newest first."""
    return [dict(row) for row in await conn.fetch(query("events_recent"), before, limit)]
