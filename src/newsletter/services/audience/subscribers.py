"""Subscribers: the one read model the API and the admin pages share, and the operator's changes to a person.

A page of subscribers stays quick at millions of people (bench/admin_pages.py): each filter starts from an
index when it picks out few people, and walks the table in id order, checking each person, when it picks out
many.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.subscriber import SubscriberEmail, SubscriberName
from newsletter.domain.vocabulary import SubscriberStatus, SubscriptionStatus
from newsletter.services.audience.lists import list_id_of, list_ids
from newsletter.services.errors import Conflict, NotFound
from newsletter.tracing import current_traceparent

# A search by beginning, or the blocklisted filter, first looks up at most this many people by index; more,
# and so many match that walking the table in id order finds a page sooner.
LOOKUP_LIMIT = 2_000
FIELDS = ("id", "email", "name", "status", "attributes", "created_at", "updated_at")


def _view(row: asyncpg.Record) -> dict[str, Any]:
    return {key: row[key] for key in FIELDS}


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def subscriber_page(
    db: Database,
    *,
    after: int | None,
    list_slug: str | None,
    status: str | None,
    search: str | None,
    contains: bool = False,
    limit: int,
) -> list[dict[str, Any]]:
    """A page of subscribers in id order after the cursor `after`.

    `status` is a person's (active, blocklisted) or a subscription's (in `list_slug`, or in any list);
    `search` matches the beginning of the address or the name, or anywhere in them when `contains` (which
    walks the table, slow when few people match). An unknown list has nobody in it.
    """
    person_status = status if status in set(SubscriberStatus) else None
    subscription_status = status if status in set(SubscriptionStatus) else None
    async with db.connection() as conn:
        try:
            list_id = await list_id_of(conn, list_slug) if list_slug else None
        except NotFound:
            return []
        pattern = None
        candidates: list[int] | None = None
        if search:
            if contains:
                pattern = f"%{_like(search)}%"
            else:
                found = await conn.fetchrow(Q.subscribers_beginning, search, LOOKUP_LIMIT)
                if max(len(found["by_email"]), len(found["by_name"])) < LOOKUP_LIMIT:
                    candidates = sorted(set(found["by_email"]) | set(found["by_name"]))
                else:
                    pattern = f"{_like(search)}%"
        elif person_status == SubscriberStatus.BLOCKLISTED:
            found_ids: list[int] = await conn.fetchval(Q.subscribers_blocklisted, after, LOOKUP_LIMIT)
            if len(found_ids) < LOOKUP_LIMIT:
                candidates = found_ids
        if candidates is not None:
            chosen = [candidate for candidate in candidates if after is None or candidate > after]
            rows = await conn.fetch(
                Q.subscribers_page_among, after, person_status, chosen, limit, list_id, subscription_status
            )
        elif list_id is not None or subscription_status is not None:
            rows = await conn.fetch(
                Q.subscribers_page_in_lists,
                after,
                person_status,
                pattern,
                limit,
                list_id,
                subscription_status,
            )
        else:
            rows = await conn.fetch(Q.subscribers_page, after, person_status, pattern, limit)
    return [_view(row) for row in rows]


async def get_subscriber(db: Database, subscriber_id: int) -> dict[str, Any]:
    """A person with their subscriptions and the consent evidence of each."""
    async with db.connection() as conn:
        row = await conn.fetchrow(Q.subscriber_get, subscriber_id)
    if row is None:
        raise NotFound(f"subscriber {subscriber_id} does not exist")
    return {**_view(row), "subscriptions": row["subscriptions"]}


async def subscriber_deliveries(db: Database, subscriber_id: int, limit: int) -> list[dict[str, Any]]:
    """The latest emails to one person, newest first."""
    async with db.connection() as conn:
        return [dict(row) for row in await conn.fetch(Q.subscriber_deliveries, subscriber_id, limit)]


async def create_subscriber(
    db: Database,
    email: SubscriberEmail,
    name: SubscriberName,
    attributes: dict[str, Any],
    lists: Sequence[str],
    status: SubscriptionStatus,
    request_id: str | None,
) -> dict[str, Any]:
    """Add a person; `confirmed` records them as confirmed already (moving from another system), `pending`
    sends them a confirmation email. An address that exists already is a Conflict: an operator cannot
    subscribe anyone again this way, least of all someone who left."""
    async with db.transaction() as conn:
        ids = await list_ids(conn, lists)
        subscriber_id = await conn.fetchval(Q.subscriber_insert, email.value, name.value, attributes)
        if subscriber_id is None:
            existing = await conn.fetchval(Q.subscriber_by_email, email.value)
            raise Conflict(f"subscriber {existing} has this address already")
        await conn.execute(
            Q.subscriptions_add, subscriber_id, ids, status, "api", request_id, current_traceparent()
        )
        return await get_subscriber(db, subscriber_id)


async def update_subscriber(
    db: Database,
    subscriber_id: int,
    name: SubscriberName | None = None,
    attributes: dict[str, Any] | None = None,
    status: SubscriberStatus | None = None,
) -> dict[str, Any]:
    async with db.transaction() as conn:
        updated = await conn.fetchval(
            Q.subscriber_update, subscriber_id, name.value if name else None, attributes, status
        )
        if updated is None:
            raise NotFound(f"subscriber {subscriber_id} does not exist")
        return await get_subscriber(db, subscriber_id)


async def unsubscribe_everywhere(db: Database, subscriber_id: int) -> int:
    """End every subscription of a person (an operator acting on their request) and suppress the address, as
    their own unsubscribe from every list does; returns how many subscriptions ended."""
    async with db.transaction() as conn:
        await get_subscriber(db, subscriber_id)
        return len(await conn.fetch(Q.subscriber_unsubscribe_all, subscriber_id))
