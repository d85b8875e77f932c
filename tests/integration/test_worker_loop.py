"""The worker's own loop: woken by NOTIFY, limited to a sending rate shared by every worker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import pytest

from newsletter.db.wake import CHANNEL
from newsletter.transports import transport_from_settings
from newsletter.worker.delivery import DeliveryWorker
from tests.harness import SMTPServer, add_confirmed, admin_client, spawn_app

pytestmark = pytest.mark.asyncio


async def _until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Wait for a state; the timeout only bounds a failure."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting until {what}")
        await asyncio.sleep(0.02)


class Stopping(asyncio.Event):
    """The stop signal given to the worker, counting who waits on it: a lane waits on it only when idle."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    async def wait(self) -> Literal[True]:
        self.waiting += 1
        try:
            return await super().wait()
        finally:
            self.waiting -= 1


async def test_a_sleeping_worker_is_woken_by_notify_long_before_its_next_poll(
    database_url: str, smtp: SMTPServer
) -> None:
    async with spawn_app(database_url, smtp, poll_interval_seconds=3600) as app:
        stopping = Stopping()
        running = asyncio.create_task(app.worker.run(stopping))

        async def asleep_and_listening() -> bool:
            if stopping.waiting < app.settings.worker_concurrency:
                return False
            listening: bool = await app.pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'idle' AND query ILIKE 'LISTEN %' AND position($1 IN query) > 0)",
                CHANNEL,
            )
            return listening

        try:
            # Every lane has found nothing and sleeps for an hour: from now on only a NOTIFY can wake one.
            await _until(asleep_and_listening, "every lane sleeps and the worker listens")
            await app.subscribe("ada@example.com")

            async def delivered() -> bool:
                return bool(smtp.to("ada@example.com"))

            await _until(delivered, "the confirmation email arrives")
            assert len(smtp.to("ada@example.com")) == 1
        finally:
            stopping.set()
            await running


async def test_two_workers_share_one_sending_rate(database_url: str, smtp: SMTPServer) -> None:
    # One email a minute: once a worker has taken this minute's, another one must wait for the next.
    async with spawn_app(database_url, smtp, send_rate_per_hour=60) as app:
        admin = await admin_client(app)
        await add_confirmed(app.pool, 2)
        issue = (await admin.post("/issues", {"subject": "Rated", "markdown": "x"})).json()
        assert (await admin.post(f"/issues/{issue['id']}/send")).status_code == 202
        other = DeliveryWorker(app.db, transport_from_settings(app.settings), app.settings)

        assert await app.worker.dispatch_once() == 1
        # The rate every worker shares: one row per transport and period, the time its next slot is free.
        [(rate, taken)] = await app.pool.fetch("SELECT transport, next_free FROM send_rate")
        waiting = asyncio.create_task(other.dispatch_once())

        async def reserved_or_sent() -> bool:
            moved: bool = await app.pool.fetchval(
                "SELECT next_free > $2 FROM send_rate WHERE transport = $1", rate, taken
            )
            return moved or waiting.done()

        try:
            await _until(reserved_or_sent, "the other worker reserves the next slot of the shared rate")
            assert not waiting.done(), "the other worker sent in the slot the first one had taken"
            assert len(smtp.received) == 1
            statuses = await app.pool.fetch("SELECT status, count(*) FROM deliveries GROUP BY status")
            assert {row["status"]: row["count"] for row in statuses} == {"sent": 1, "queued": 1}
        finally:
            # It waits for its slot before claiming anything, so stopping it there leaves nothing behind.
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            await other.transport.close()
