"""The dashboard: subscribers per list, sign-ups per day, the latest issues with their progress, each read in
a way that stays quick with a million subscribers (bench/admin_pages.py), and the webhook endpoints that were
turned off for failing."""

from __future__ import annotations

from datetime import date
from typing import Any, NamedTuple

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.services.audience import lists
from newsletter.services.integrations import webhooks
from newsletter.services.sending.issues import list_issues

GROWTH_DAYS = 30
RECENT_ISSUES = 5
# The reason webhook_update gives an endpoint an operator turns off: the operator knows, no notice is needed.
TURNED_OFF_BY_OPERATOR = "turned off by an operator"


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
        "webhooks_turned_off": await webhooks_turned_off(db),
    }


async def webhooks_turned_off(db: Database) -> list[dict[str, Any]]:
    """The endpoints the dispatcher turned off (gone, or failing too long), which wait for an operator."""
    return [
        endpoint
        for endpoint in await webhooks.endpoints(db)
        if not endpoint["active"]
        and endpoint["disabled_at"] is not None
        and endpoint["disabled_reason"] != TURNED_OFF_BY_OPERATOR
    ]
