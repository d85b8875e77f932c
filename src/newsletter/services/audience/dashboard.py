"""The dashboard: subscribers per list, sign-ups per day, and the latest issues with their progress, each read
in a way that stays quick with a million subscribers (bench/admin_pages.py)."""

from __future__ import annotations

from datetime import date
from typing import Any, NamedTuple

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.services.audience import lists
from newsletter.services.sending.issues import list_issues

GROWTH_DAYS = 30
RECENT_ISSUES = 5


class Day(NamedTuple):
    day: date
    added: int
    estimated: bool


async def dashboard(db: Database) -> dict[str, Any]:
    async with db.transaction() as conn:
        await conn.execute(Q.without_jit)
        rows = await conn.fetch(Q.dashboard_growth, GROWTH_DAYS, lists.EXACT_COUNT_BUDGET)
    growth = [
        Day(row["day"], lists.shown_count(row["added"], row["estimated"]), row["estimated"]) for row in rows
    ]
    return {
        "lists": await lists.all_lists(db),
        "growth": growth,
        "growth_max": max((day.added for day in growth), default=0),
        "issues": await list_issues(db, before=None, status=None, limit=RECENT_ISSUES),
    }
