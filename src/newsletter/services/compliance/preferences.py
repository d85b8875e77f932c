"""The preference page of a person (SPEC section 13): the public lists and their state, joining one, a new
name. Leaving everything, the person's data and its erasure are the unsubscribe link's and the privacy
services' (compliance/unsubscribe.py, compliance/privacy.py). The link every newsletter carries names the
person (a signed PreferencesToken); every action is idempotent, so a repeated click changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from newsletter import telemetry
from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.subscriber import InvalidInput, SubscriberName
from newsletter.services.audience.subscriptions import Evidence
from newsletter.services.errors import Conflict, Invalid, NotFound

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PublicList:
    id: int
    slug: str
    name: str
    description: str
    status: str | None  # the person's: confirmed, pending, unsubscribed, or None (not in it)


@dataclass(frozen=True, slots=True)
class Page:
    subscriber_id: int
    email: str
    name: str
    blocklisted: bool
    lists: list[PublicList]


async def page(db: Database, subscriber_id: int) -> Page:
    async with db.connection() as conn:
        person = await conn.fetchrow(Q.preferences_person, subscriber_id)
        if person is None:
            raise NotFound("nobody")
        rows = await conn.fetch(Q.preferences_lists, subscriber_id)
    return Page(
        subscriber_id=person["id"],
        email=person["email"],
        name=person["name"],
        blocklisted=person["status"] == "blocklisted",
        lists=[
            PublicList(row["id"], row["slug"], row["name"], row["description"], row["status"]) for row in rows
        ],
    )


async def join(db: Database, subscriber_id: int, list_id: int, evidence: Evidence) -> bool:
    """Into a public list, confirmed; False when already in it."""
    async with db.connection() as conn:
        row = await conn.fetchrow(
            Q.preferences_join, subscriber_id, list_id, evidence.ip, (evidence.user_agent or "")[:512] or None
        )
    assert row is not None
    if not row["list"]:
        raise NotFound(f"list {list_id} is not open to sign-ups")
    if not row["person"]:
        raise Conflict("this address cannot join a list here")
    if row["joined"]:
        # A sign-up confirmed at once, in the funnel's counters as one from the form and its link.
        telemetry.SIGNUPS.labels(row["list"]).inc()
        telemetry.CONFIRMATIONS.labels(row["list"]).inc()
        log.info("joined from the preference page", subscriber_id=subscriber_id, list_id=list_id)
    return bool(row["joined"])


async def rename(db: Database, subscriber_id: int, raw_name: str) -> None:
    try:
        name = SubscriberName.parse(raw_name).value
    except InvalidInput as error:
        raise Invalid(f"name: {error}") from None
    async with db.connection() as conn:
        await conn.fetchval(Q.preferences_rename, subscriber_id, name)
