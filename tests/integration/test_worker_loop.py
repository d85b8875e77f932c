"""The worker's own loop: woken by NOTIFY, limited to a sending rate shared by every worker."""

from __future__ import annotations

import asyncio
import time

import pytest

from newsletter.transports import transport_from_settings
from newsletter.worker.delivery import DeliveryWorker
from tests.harness import SMTPServer, add_confirmed, admin_client, spawn_app

pytestmark = pytest.mark.asyncio


async def test_a_sleeping_worker_is_woken_by_notify_long_before_its_next_poll(
    database_url: str, smtp: SMTPServer
) -> None:
    async with spawn_app(database_url, smtp, poll_interval_seconds=60) as app:
        stopping = asyncio.Event()
        running = asyncio.create_task(app.worker.run(stopping))
        await asyncio.sleep(0.5)  # the worker has found nothing and sleeps for a minute
        try:
            await app.subscribe("ada@example.com")
            for _ in range(100):
                if smtp.received:
                    break
                await asyncio.sleep(0.05)
            assert len(smtp.to("ada@example.com")) == 1
        finally:
            stopping.set()
            await running


async def test_two_workers_share_one_sending_rate(database_url: str, smtp: SMTPServer) -> None:
    async with spawn_app(database_url, smtp, send_rate_per_second=20) as app:
        admin = await admin_client(app)
        await add_confirmed(app.pool, 40)
        issue = (await admin.post("/issues", {"subject": "Rated", "markdown": "x"})).json()
        other = DeliveryWorker(app.pool, transport_from_settings(app.settings), app.settings)

        started = time.monotonic()
        await admin.post(f"/issues/{issue['id']}/send")
        await asyncio.gather(app.worker.drain(), other.drain())
        elapsed = time.monotonic() - started
        await other.transport.close()

        assert len(smtp.received) == 40
        # 40 emails at 20 per second, whichever worker sends them: the first 20 may go at once, the rest wait.
        assert elapsed >= 0.9
