"""Unsubscribing, from one list or from all, with the link every newsletter carries."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.tokens import UnsubscribeToken

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Subscription:
    list_id: int
    list_name: str
    status: str


@dataclass(frozen=True, slots=True)
class Preferences:
    email: str
    list_id: int
    subscriptions: list[Subscription]

    @property
    def list_name(self) -> str:
        return next((s.list_name for s in self.subscriptions if s.list_id == self.list_id), "this list")


async def preferences(db: Database, token: UnsubscribeToken) -> Preferences | None:
    async with db.connection() as conn:
        rows = await conn.fetch(Q.unsubscribe_preferences, token.subscriber_id)
    if not rows:
        return None
    return Preferences(
        email=rows[0]["email"],
        list_id=token.list_id,
        subscriptions=[Subscription(row["list_id"], row["list_name"], row["status"]) for row in rows],
    )


async def _end(db: Database, subscriber_id: int, list_id: int | None, everything: bool) -> bool:
    """Subscriptions ended (`list_id`'s, or every one, the address then suppressed); False when nobody."""
    async with db.connection() as conn:
        changed = await conn.fetchval(Q.unsubscribe, subscriber_id, list_id, everything)
    if changed is None:
        return False
    log.info("unsubscribed", subscriber_id=subscriber_id, everything=everything, changed=changed)
    return True


async def unsubscribe(db: Database, token: UnsubscribeToken, *, everything: bool) -> Preferences | None:
    """Unsubscribe from the token's list, or from every list (and suppress the address); repeating is
    harmless."""
    if not await _end(db, token.subscriber_id, token.list_id, everything):
        return None
    return await preferences(db, token)


async def leave_every_list(db: Database, subscriber_id: int) -> bool:
    """Every list, private ones too, and the address suppressed (the preference page's "leave everything");
    False when the person does not exist."""
    return await _end(db, subscriber_id, None, True)
