"""Webhooks while the worker is killed with SIGKILL mid-dispatch.

    .venv/bin/pytest tests/resilience/test_webhook_crashes.py -s        # figures printed

A few thousand events (the subscriber.created and subscription.confirmed events of 1,500 people added in one
statement) go to a real receiver (tests/receiver.py) that verifies every signature and answers slowly, so that
many requests are in flight at any moment. A `newsletter worker` process is killed with SIGKILL while the
receiver holds some of them; a new worker is started. Its leases must expire before the new worker takes the
dead one's deliveries back: a webhook lease is the request timeout plus a fixed 30 s margin
(LEASE_MARGIN_SECONDS in worker/webhooks.py), with no setting of its own, so the test shortens the timeout to
1 s and waits about 31 s.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from newsletter.db.database import Database
from newsletter.domain.webhooks import WebhookUrl, message_id
from newsletter.services.integrations.webhooks import EndpointChange, create_endpoint
from newsletter.worker.webhooks import LEASE_MARGIN_SECONDS
from tests.harness import SMTPServer, add_confirmed
from tests.processes import start_worker, stop
from tests.receiver import Answer, Receiver, running_receiver
from tests.resilience.measure import Figures, clock

pytestmark = [pytest.mark.asyncio, pytest.mark.resilience]

PEOPLE = 1_500
EVENT_TYPES = ["subscriber.created", "subscription.confirmed"]
CONCURRENCY = 32  # requests in flight, in all and to the one endpoint
TIMEOUT_SECONDS = 1.0
ANSWER_DELAY = 0.2  # the receiver's, well within the timeout: slow, never failing
SETTINGS = {
    "NEWSLETTER_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
    "NEWSLETTER_WEBHOOK_CONCURRENCY": str(CONCURRENCY),
    "NEWSLETTER_WEBHOOK_ENDPOINT_CONCURRENCY": str(CONCURRENCY),
    "NEWSLETTER_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
}
DISPATCH_TIMEOUT = 600  # seconds; generous, for a machine shared with other work


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as running:
        running.default = Answer(delay=ANSWER_DELAY)
        yield running


def unique_ids(receiver: Receiver) -> set[str]:
    return {item.headers["webhook-id"] for item in receiver.received}


async def leased_now(conn: asyncpg.Connection) -> set[int]:
    """The events whose deliveries are claimed and not yet settled: what a worker killed now had in flight."""
    rows = await conn.fetch("SELECT event_id FROM webhook_deliveries WHERE status = 'sending'")
    return {row["event_id"] for row in rows}


async def wait_until_delivered(conn: asyncpg.Connection, expected: int) -> None:
    deadline = time.monotonic() + DISPATCH_TIMEOUT
    while (
        await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'") < expected
    ):
        if time.monotonic() > deadline:
            counts = await conn.fetch("SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
            raise AssertionError(f"not every webhook was delivered: {[tuple(row) for row in counts]}")
        await asyncio.sleep(0.2)


async def test_worker_killed_with_sigkill_while_webhooks_are_in_flight(
    database_url: str, ledger: asyncpg.Connection, receiver: Receiver, smtp: SMTPServer, tmp_path: Path
) -> None:
    endpoint = await create_endpoint(
        Database.on(ledger), EndpointChange(url=WebhookUrl.parse(receiver.url), events=EVENT_TYPES)
    )
    receiver.secret = endpoint["secret"]
    await add_confirmed(ledger, PEOPLE)  # type: ignore[arg-type]
    event_ids = [
        row["id"]
        for row in await ledger.fetch("SELECT id FROM events WHERE type = ANY($1) ORDER BY id", EVENT_TYPES)
    ]
    assert len(event_ids) == 2 * PEOPLE
    assert await ledger.fetchval("SELECT count(*) FROM webhook_deliveries") == len(event_ids)

    log = tmp_path / "workers.log"
    started = time.monotonic()
    worker = start_worker(database_url, smtp, log, **SETTINGS)
    try:
        # A third of the events in, and the receiver holding requests: the kill catches some on the wire.
        while len(unique_ids(receiver)) < len(event_ids) // 3 or receiver.in_flight == 0:
            assert worker.poll() is None, f"the worker exited:\n{log.read_text()}"
            assert time.monotonic() - started < DISPATCH_TIMEOUT, "the worker delivered too little"
            await asyncio.sleep(0.02)
        # What it holds is 'sending' just before or just after the kill: no lease expires in between.
        held = await leased_now(ledger)
        held_by_the_receiver = receiver.in_flight
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        dead_leases = await leased_now(ledger)
        held |= dead_leases
        killed_at = await clock(ledger)
        seen_at_kill = len(unique_ids(receiver))
        assert 0 < seen_at_kill < len(event_ids), "the kill came while some webhooks were still to go"
        assert dead_leases, "the kill caught deliveries in flight"
        assert held_by_the_receiver > 0, "the receiver held requests when the worker was killed"

        worker = start_worker(database_url, smtp, log, **SETTINGS)
        await wait_until_delivered(ledger, len(event_ids))
        dispatch_seconds = time.monotonic() - started
    finally:
        code = stop(worker)
    assert code == 0, "the second worker stops cleanly"

    # Every event reached the receiver, signed, and nothing else did.
    assert all(item.verified for item in receiver.received), "every request carries a valid signature"
    copies = Counter(item.headers["webhook-id"] for item in receiver.received)
    assert set(copies) == {message_id(event_id) for event_id in event_ids}
    assert all(message_id(item.event["id"]) == item.headers["webhook-id"] for item in receiver.received)

    # The ledger: every delivery delivered; each one sent more than once was held by the dead worker, and
    # its attempts count every copy.
    ledger_rows = {
        row["event_id"]: row
        for row in await ledger.fetch(
            "SELECT event_id, status, attempts, delivered_at FROM webhook_deliveries"
        )
    }
    assert len(ledger_rows) == len(event_ids)
    assert Counter(row["status"] for row in ledger_rows.values()) == {"delivered": len(event_ids)}
    twice = {event_id for event_id in event_ids if copies[message_id(event_id)] > 1}
    for event_id in twice:
        assert event_id in held, f"event {event_id} went twice but was not in flight at the kill"
        assert ledger_rows[event_id]["attempts"] >= copies[message_id(event_id)], (
            f"event {event_id} went {copies[message_id(event_id)]} times, "
            f"but the ledger shows {ledger_rows[event_id]['attempts']} attempts"
        )
    for event_id in dead_leases:
        assert ledger_rows[event_id]["attempts"] >= 2, f"event {event_id}'s lease was never taken back"
    duplicates = copies.total() - len(copies)
    # Each look at the ledger sees at most CONCURRENCY claimed; the two looks around the kill, twice that.
    assert len(dead_leases) <= CONCURRENCY, f"{len(dead_leases)} claimed at once (at most {CONCURRENCY})"
    assert duplicates <= len(held) <= 2 * CONCURRENCY, (
        f"{duplicates} duplicates; {len(held)} in flight around the kill (at most {2 * CONCURRENCY})"
    )

    recovery = max(
        (ledger_rows[event_id]["delivered_at"] - killed_at).total_seconds() for event_id in dead_leases
    )
    retried = sum(row["attempts"] - 1 for row in ledger_rows.values())
    Figures(
        "webhook worker SIGKILL",
        len(event_ids),
        0,
        duplicates,
        len(held),
        recovery,
        dispatch_seconds,
        retried,
        len(dead_leases),
        notes={
            "seen_at_kill": seen_at_kill,
            "held_by_the_receiver": held_by_the_receiver,
            "lease_seconds": TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS,
        },
    ).report()
