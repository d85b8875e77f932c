"""Webhook endpoints: saved after their URL is checked (an http(s) URL whose host resolves to public addresses
only, unless private ones are allowed), read with what waits for them, tested, and replayed from a cursor.

The deliveries themselves are made by the database (a trigger on the event record, migration 0015) and sent
by the worker (worker/webhooks.py), which checks the addresses again when it connects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.subscriber import InvalidInput
from newsletter.domain.vocabulary import EventType
from newsletter.domain.webhooks import IPAddress, WebhookUrl, new_secret, refused_address
from newsletter.services.errors import Invalid, NotFound

ALL_EVENTS = "*"
# What an operator subscribes an endpoint to: every type, or types they choose (not the test event, which
# goes to one endpoint when asked).
SUBSCRIBABLE = frozenset(str(kind) for kind in EventType if kind != EventType.WEBHOOK_TEST)
FIELDS = (
    "id",
    "url",
    "description",
    "active",
    "created_at",
    "updated_at",
    "failing_since",
    "retry_at",
    "disabled_at",
    "disabled_reason",
    "waiting",
    "oldest_waiting",
)


class RefusedTarget(OSError):
    """A request would go to an address it may not go to; the message says which and why."""


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses a host name stands for (an IP address stands for itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise RefusedTarget(f"{host} cannot be resolved ({error})") from None
    # A scope id (fe80::1%eth0) is not part of the address.
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found))


def check_addresses(host: str, addresses: Iterable[IPAddress]) -> None:
    """Refuse the whole host when any of its addresses is not public: a name that resolves to a public and a
    private address would reach the private one on some attempts."""
    for address in addresses:
        reason = refused_address(address)
        if reason is not None:
            raise RefusedTarget(f"{host} resolves to {reason}" if str(address) != host else reason)


async def checked_url(raw: str, *, allow_private: bool) -> WebhookUrl:
    """The URL, parsed, and its host resolved and checked (outside any transaction: DNS can be slow)."""
    try:
        url = WebhookUrl.parse(raw)
    except InvalidInput as error:
        raise Invalid(str(error)) from None
    if allow_private:
        return url
    try:
        check_addresses(url.host, await resolve(url.host, url.port))
    except RefusedTarget as error:
        raise Invalid(f"url: {error}; webhooks go to public addresses only") from None
    return url


def event_types(raw: Collection[str]) -> list[str]:
    """The types an endpoint wants: '*' alone, or known types."""
    wanted = list(dict.fromkeys(raw))
    if not wanted:
        raise Invalid("events: name at least one event type, or '*' for all")
    if ALL_EVENTS in wanted:
        if len(wanted) > 1:
            raise Invalid("events: '*' already means every type; give it alone")
        return [ALL_EVENTS]
    unknown = [kind for kind in wanted if kind not in SUBSCRIBABLE]
    if unknown:
        raise Invalid(f"events: unknown event type {', '.join(map(repr, unknown))}")
    return wanted


def _view(row: asyncpg.Record) -> dict[str, Any]:
    return {**{key: row[key] for key in FIELDS}, "events": list(row["event_types"])}


@dataclass(frozen=True, slots=True)
class EndpointChange:
    """What an operator sets on an endpoint, checked (`checked_url`, `event_types`); None keeps a value."""

    url: WebhookUrl | None = None
    description: str | None = None
    events: list[str] | None = None
    active: bool | None = None


async def endpoints(db: Database) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        return [_view(row) for row in await conn.fetch(Q.webhook_endpoints, None)]


async def get_endpoint(db: Database, endpoint_id: int) -> dict[str, Any]:
    async with db.connection() as conn:
        row = await conn.fetchrow(Q.webhook_endpoints, endpoint_id)
    if row is None:
        raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
    return _view(row)


async def create_endpoint(db: Database, change: EndpointChange) -> dict[str, Any]:
    """A new endpoint, with its signing secret: the only time the secret is shown."""
    if change.url is None or change.events is None:
        raise Invalid("an endpoint needs a url and the events it wants")
    secret = new_secret()
    async with db.transaction() as conn:
        endpoint_id = await conn.fetchval(
            Q.webhook_create,
            change.url.value,
            change.description or "",
            change.events,
            True if change.active is None else change.active,
            secret,
        )
        return {**await get_endpoint(db, endpoint_id), "secret": secret}


async def update_endpoint(db: Database, endpoint_id: int, change: EndpointChange) -> dict[str, Any]:
    async with db.transaction() as conn:
        found = await conn.fetchval(
            Q.webhook_update,
            endpoint_id,
            change.url.value if change.url else None,
            change.description,
            change.events,
            change.active,
        )
        if found is None:
            raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
        return await get_endpoint(db, endpoint_id)


async def delete_endpoint(db: Database, endpoint_id: int) -> None:
    async with db.transaction() as conn:
        if await conn.fetchval(Q.webhook_delete, endpoint_id) is None:
            raise NotFound(f"webhook endpoint {endpoint_id} does not exist")


async def attempts(db: Database, endpoint_id: int, *, before: int | None, limit: int) -> list[dict[str, Any]]:
    """The requests made to an endpoint, newest first, each with its answer."""
    await get_endpoint(db, endpoint_id)
    async with db.connection() as conn:
        return [dict(row) for row in await conn.fetch(Q.webhook_attempts_page, endpoint_id, before, limit)]


async def send_test(db: Database, endpoint_id: int) -> dict[str, Any]:
    """A `webhook.test` event, sent to this endpoint alone; its attempt shows how the endpoint answers."""
    async with db.transaction() as conn:
        row = await conn.fetchrow(Q.webhook_test, endpoint_id)
    if row is None:
        raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
    return {"delivery_id": row["delivery_id"], "event_id": row["event_id"]}


async def replay(db: Database, endpoint_id: int, after: int) -> dict[str, Any]:
    """Send the endpoint again every event of its types after the event `after`."""
    async with db.transaction() as conn:
        row = await conn.fetchrow(Q.webhook_replay, endpoint_id, after)
    assert row is not None
    if not row["found"]:
        raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
    return {"queued": row["queued"]}
