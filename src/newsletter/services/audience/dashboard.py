"""The dashboard: subscribers per list, sign-ups per day, the sign-up funnel per list, the latest issues with
their progress, each read in a way that stays quick with a million subscribers (bench/admin_pages.py), and the
webhook endpoints that were turned off for failing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

import asyncpg

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


class FunnelDay(NamedTuple):
    day: date
    signups: int
    confirmations: int
    estimated: bool


@dataclass(frozen=True, slots=True)
class ListFunnel:
    """A list's sign-ups and confirmations per day over the funnel's days, oldest first."""

    slug: str
    name: str
    days: list[FunnelDay]

    @property
    def signups(self) -> int:
        return sum(day.signups for day in self.days)

    @property
    def confirmations(self) -> int:
        return sum(day.confirmations for day in self.days)

    @property
    def rate(self) -> float | None:
        """Confirmations per sign-up over these days (a sign-up of the day before the first that is confirmed
        within them counts as a confirmation only); None without a sign-up."""
        return self.confirmations / self.signups if self.signups else None

    @property
    def estimated(self) -> bool:
        return any(day.estimated for day in self.days)

    @property
    def busiest(self) -> int:
        return max((max(day.signups, day.confirmations) for day in self.days), default=0)


async def funnel(conn: asyncpg.Connection, days: Sequence[date]) -> list[ListFunnel]:
    """The lists that had sign-ups or confirmations on these days (the last ones, today included, in order),
    by name; in the transaction that read `days` from the database's clock."""
    rows = await conn.fetch(Q.dashboard_funnel, len(days), lists.EXACT_COUNT_BUDGET)
    names = {row["id"]: row for row in await conn.fetch(Q.list_names)}
    counted: dict[int, dict[date, FunnelDay]] = {}
    for row in rows:
        if row["list_id"] in names:  # a list deleted since stays in the kept days, and is not shown
            counted.setdefault(row["list_id"], {})[row["day"]] = FunnelDay(
                row["day"],
                lists.shown_count(row["signups"], row["estimated"]),
                lists.shown_count(row["confirmations"], row["estimated"]),
                row["estimated"],
            )
    found = [
        ListFunnel(
            names[list_id]["slug"],
            names[list_id]["name"],
            [per_day.get(day, FunnelDay(day, 0, 0, False)) for day in days],
        )
        for list_id, per_day in counted.items()
    ]
    return sorted(found, key=lambda shown: (shown.name.lower(), shown.slug))


async def dashboard(db: Database) -> dict[str, Any]:
    async with db.transaction() as conn:
        await conn.execute(Q.without_jit)
        rows = await conn.fetch(Q.dashboard_growth, GROWTH_DAYS, lists.EXACT_COUNT_BUDGET)
        funnels = await funnel(conn, [row["day"] for row in rows])
    growth = [
        Day(row["day"], lists.shown_count(row["added"], row["estimated"]), row["estimated"]) for row in rows
    ]
    return {
        "funnels": funnels,
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
