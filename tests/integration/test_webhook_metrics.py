"""The webhook metrics (SPEC section 11): attempts by outcome, and the age of what waits for each endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.harness import AdminClient, SMTPServer, TestApp, admin_client, spawn_app
from tests.integration.test_webhook_endpoints import HOOK_SETTINGS
from tests.receiver import Answer, running_receiver

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def app(database_url: str, smtp: SMTPServer) -> AsyncIterator[TestApp]:
    async with spawn_app(database_url, smtp, **HOOK_SETTINGS) as test_app:
        yield test_app


async def test_attempts_by_outcome_and_the_oldest_waiting_per_endpoint(app: TestApp) -> None:
    admin: AdminClient = await admin_client(app)
    async with running_receiver() as receiver:
        created = (await admin.post("/webhooks", {"url": receiver.url, "events": ["*"]})).json()
        receiver.secret = created["secret"]
        endpoint = str(created["id"])
        before = {
            outcome: await app.metric("newsletter_webhook_attempts_total", outcome=outcome)
            for outcome in ("delivered", "retried")
        }
        receiver.default = Answer(500)
        await app.add_subscriber("ada@example.com", lists=())
        await app.webhooks.drain()
        await app.pass_time(60)
        await app.webhooks.housekeeping()

        waiting = await app.metric("newsletter_webhook_oldest_waiting_seconds", endpoint=endpoint)
        assert waiting >= 60, "the event waits, a minute old on the database's clock"
        assert (
            await app.metric("newsletter_webhook_attempts_total", outcome="retried") == before["retried"] + 1
        )

        receiver.default = Answer(204)
        await app.pool.execute("UPDATE webhook_endpoints SET retry_at = NULL")
        await app.pool.execute("UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 hour'")
        await app.webhooks.drain()
        await app.webhooks.housekeeping()

    assert (
        await app.metric("newsletter_webhook_attempts_total", outcome="delivered") == before["delivered"] + 1
    )
    assert await app.metric("newsletter_webhook_oldest_waiting_seconds", endpoint=endpoint) == 0
