"""Outgoing webhooks (SPEC section 11), end to end: registered through the API, sent by the dispatcher to a
real HTTP receiver that verifies each signature, retried while it is down, turned off when it is gone."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from newsletter.worker.webhooks import WebhookDispatcher
from tests.harness import AdminClient, SMTPServer, TestApp, admin_client, spawn_app
from tests.receiver import Answer, Receiver, running_receiver

pytestmark = pytest.mark.asyncio

HOOK_SETTINGS: dict[str, Any] = {
    "webhook_allow_private": True,  # the receiver is on loopback
    "webhook_retry_base_seconds": 0.05,
    "webhook_retry_max_seconds": 0.2,
    "webhook_timeout_seconds": 1,
}


@pytest.fixture
async def app(database_url: str, smtp: SMTPServer) -> AsyncIterator[TestApp]:
    async with spawn_app(database_url, smtp, **HOOK_SETTINGS) as test_app:
        yield test_app


@pytest.fixture
async def admin(app: TestApp) -> AdminClient:
    return await admin_client(app)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as running:
        yield running


async def _register(admin: AdminClient, receiver: Receiver, events: list[str]) -> dict[str, Any]:
    response = await admin.post("/webhooks", {"url": receiver.url, "events": events})
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    receiver.secret = endpoint["secret"]
    return endpoint


async def _deliver_until(app: TestApp, done: Any, timeout: float = 10) -> None:
    """Run the dispatcher until `done()` (retries wait for their time, so this may take a few rounds)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "gave up waiting for the webhooks"
        await app.webhooks.drain()
        await app.webhooks.housekeeping()
        import asyncio

        await asyncio.sleep(0.02)


async def test_a_confirmation_reaches_the_endpoint_signed(
    app: TestApp, admin: AdminClient, receiver: Receiver
) -> None:
    endpoint = await _register(admin, receiver, ["subscription.confirmed", "delivery.bounced"])
    assert endpoint["secret"].startswith("whsec_")
    assert "secret" not in (await admin.get(f"/webhooks/{endpoint['id']}")).json()
    assert "secret" not in (await admin.get("/webhooks")).json()[0]

    await app.subscribe("ada@example.com", "Ada")
    await app.dispatch_all_pending()
    await app.confirm(app.confirmation_links("ada@example.com")[0])
    assert await app.webhooks.drain() == 1

    [request] = receiver.received
    assert request.verified, "the Standard Webhooks library verifies the signature"
    event = request.event
    assert event["type"] == "subscription.confirmed"
    assert event["data"]["email"] == "ada@example.com" and event["data"]["list"] == "default"
    assert request.headers["webhook-id"] == f"evt_{event['id']}"
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    # The specification's few lines, by hand: HMAC-SHA256 over "id.timestamp.body" with the decoded secret.
    key = base64.b64decode(endpoint["secret"].removeprefix("whsec_"))
    signed = (
        f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    )
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert request.headers["webhook-signature"] == f"v1,{expected}"
    assert request.headers["content-type"] == "application/json"

    attempts = (await admin.get(f"/webhooks/{endpoint['id']}/attempts")).json()["items"]
    assert [(a["event_type"], a["status_code"], a["delivery_status"]) for a in attempts] == [
        ("subscription.confirmed", 204, "delivered")
    ]


async def test_while_the_endpoint_is_down_events_wait_and_then_arrive_in_order(
    database_url: str, smtp: SMTPServer, receiver: Receiver
) -> None:
    """Down for hours (the database's clock moves on): the first events are tried again and again at growing
    intervals, nothing else is sent; once it is back, everything arrives, in event order (one request in
    flight at a time, for strict order)."""
    settings = {
        **HOOK_SETTINGS,
        "webhook_retry_base_seconds": 60,
        "webhook_retry_max_seconds": 3600,
        "webhook_endpoint_concurrency": 1,
    }
    async with spawn_app(database_url, smtp, **settings) as app:
        admin = await admin_client(app)
        endpoint = await _register(admin, receiver, ["subscriber.created"])
        receiver.default = Answer(500, body="database is down")
        for n in range(12):
            await app.add_subscriber(f"reader{n}@example.com", lists=())

        await app.webhooks.drain()
        down = (await admin.get(f"/webhooks/{endpoint['id']}")).json()
        assert down["failing_since"] is not None and down["retry_at"] is not None
        assert down["waiting"] == 12
        assert len(receiver.received) == 1, "a down endpoint is not sent more while it waits"
        assert await app.webhooks.drain() == 0
        for _ in range(5):  # an hour or so passes, a wait at a time
            await app.pool.execute("UPDATE clock SET shift = shift + interval '1 hour'")
            await app.webhooks.drain()
        assert {r.event["data"]["email"] for r in receiver.received} == {"reader0@example.com"}
        assert len(receiver.received) == 6

        receiver.default = Answer(200)
        receiver.received.clear()
        await app.pool.execute("UPDATE clock SET shift = shift + interval '1 hour'")
        await _deliver_until(app, lambda: len(receiver.received) >= 12)

        arrived = [request.event for request in receiver.received]
        assert [event["data"]["email"] for event in arrived] == [f"reader{n}@example.com" for n in range(12)]
        assert all(request.verified for request in receiver.received)
        well = (await admin.get(f"/webhooks/{endpoint['id']}")).json()
        assert well["failing_since"] is None and well["retry_at"] is None and well["waiting"] == 0
        attempts = (await admin.get(f"/webhooks/{endpoint['id']}/attempts", limit=1000)).json()["items"]
        assert [a["status_code"] for a in reversed(attempts)] == [500] * 6 + [200] * 12
        assert attempts[-1]["error"] == "HTTP 500: database is down"


async def test_an_endpoint_that_does_not_answer_in_time_is_tried_again(
    app: TestApp, admin: AdminClient, receiver: Receiver
) -> None:
    endpoint = await _register(admin, receiver, ["*"])
    receiver.script.append(Answer(204, delay=3))  # past the 1 s timeout
    await app.add_subscriber("slow@example.com", lists=())

    await app.webhooks.drain()
    [attempt] = (await admin.get(f"/webhooks/{endpoint['id']}/attempts")).json()["items"]
    assert attempt["status_code"] is None and attempt["error"] == "no answer within 1 s"
    assert attempt["delivery_status"] == "queued"

    await app.pool.execute("UPDATE webhook_endpoints SET retry_at = now()")
    await _deliver_until(app, lambda: len(receiver.received) >= 2)
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"], "a retry is the same message"


async def test_a_429_is_waited_for_as_long_as_retry_after_says(
    app: TestApp, admin: AdminClient, receiver: Receiver
) -> None:
    endpoint = await _register(admin, receiver, ["*"])
    receiver.script.append(Answer(429, headers={"Retry-After": "120"}))
    await app.add_subscriber("busy@example.com", lists=())

    await app.webhooks.drain()

    wait = await app.pool.fetchval(
        "SELECT extract(epoch FROM retry_at - now()) FROM webhook_endpoints WHERE id = $1", endpoint["id"]
    )
    assert 100 < wait <= 121
    assert await app.webhooks.drain() == 0, "nothing is sent before the wait is over"
    assert len(receiver.received) == 1


async def test_a_gone_endpoint_is_turned_off_with_an_event(
    app: TestApp, admin: AdminClient, receiver: Receiver
) -> None:
    endpoint = await _register(admin, receiver, ["subscriber.created"])
    async with running_receiver() as watcher:
        await _register(admin, watcher, ["webhook.disabled"])
        receiver.default = Answer(410)
        await app.add_subscriber("gone@example.com", lists=())

        await app.webhooks.drain()
        await app.webhooks.drain()

        off = (await admin.get(f"/webhooks/{endpoint['id']}")).json()
        assert off["active"] is False and off["disabled_reason"] == "the endpoint answered 410 Gone"
        [disabled] = [request.event for request in watcher.received]
        assert disabled["type"] == "webhook.disabled"
        assert disabled["data"] == {
            "endpoint_id": endpoint["id"],
            "url": receiver.url,
            "reason": "the endpoint answered 410 Gone",
        }
    await app.add_subscriber("later@example.com", lists=())
    await app.webhooks.drain()
    assert len(receiver.received) == 1, "an endpoint turned off receives nothing more"
    [attempt] = (await admin.get(f"/webhooks/{endpoint['id']}/attempts")).json()["items"]
    assert attempt["delivery_status"] == "failed"

    # Turned on again by the operator, it starts afresh.
    receiver.default = Answer(200)
    on = (await admin.patch(f"/webhooks/{endpoint['id']}", {"active": True})).json()
    assert on["active"] is True and on["disabled_at"] is None and on["failing_since"] is None


async def test_an_endpoint_failing_for_days_is_given_up_on_and_turned_off(
    app: TestApp, admin: AdminClient, receiver: Receiver
) -> None:
    endpoint = await _register(admin, receiver, ["*"])
    receiver.default = Answer(503)
    await app.add_subscriber("first@example.com", lists=())
    await app.webhooks.drain()
    assert (await admin.get(f"/webhooks/{endpoint['id']}")).json()["active"] is True

    await app.pool.execute("UPDATE clock SET shift = interval '73 hours'")  # three days pass
    await app.webhooks.drain()

    off = (await admin.get(f"/webhooks/{endpoint['id']}")).json()
    assert off["active"] is False and off["disabled_reason"] == "failing for 72 hours"
    await app.events_settled()
    assert (await admin.get("/events", type="webhook.disabled")).json()["items"]
    assert await app.pool.fetchval("SELECT status FROM webhook_deliveries") == "failed"


async def test_what_waits_too_long_is_given_up(app: TestApp, admin: AdminClient, receiver: Receiver) -> None:
    endpoint = await _register(admin, receiver, ["*"])
    await admin.patch(f"/webhooks/{endpoint['id']}", {"active": False})
    await admin.patch(f"/webhooks/{endpoint['id']}", {"active": True})
    await app.pool.execute("UPDATE webhook_endpoints SET retry_at = now() + interval '100 hours'")
    await app.add_subscriber("waiting@example.com", lists=())

    await app.pool.execute("UPDATE clock SET shift = interval '73 hours'")
    await app.webhooks.housekeeping()

    status, error = await app.pool.fetchrow("SELECT status, last_error FROM webhook_deliveries")
    assert status == "failed" and error == "given up after 72 hours"


async def test_replay_sends_again_what_came_after_a_cursor(
    app: TestApp, admin: AdminClient, receiver: Receiver
) -> None:
    endpoint = await _register(admin, receiver, ["subscriber.created"])
    for n in range(3):
        await app.add_subscriber(f"r{n}@example.com", lists=())
    await app.webhooks.drain()
    first, second, third = receiver.received
    receiver.received.clear()
    await app.events_settled()  # a replay reads up to the horizon of the server's open transactions

    response = await admin.post(f"/webhooks/{endpoint['id']}/replay?after={first.event['id']}")
    assert response.status_code == 202 and response.json() == {"queued": 2}
    await app.webhooks.drain()

    assert [r.headers["webhook-id"] for r in receiver.received] == [
        second.headers["webhook-id"],
        third.headers["webhook-id"],
    ]
    assert all(r.verified for r in receiver.received)


async def test_a_test_event_goes_to_that_endpoint_alone(
    app: TestApp, admin: AdminClient, receiver: Receiver
) -> None:
    endpoint = await _register(admin, receiver, ["delivery.bounced"])
    async with running_receiver() as other:
        await _register(admin, other, ["*"])
        response = await admin.post(f"/webhooks/{endpoint['id']}/test")
        assert response.status_code == 202
        await app.webhooks.drain()
        assert other.received == []
    [request] = receiver.received
    assert request.verified and request.event["type"] == "webhook.test"
    assert request.event["id"] == response.json()["event_id"]


async def test_redirects_are_not_followed(app: TestApp, admin: AdminClient, receiver: Receiver) -> None:
    endpoint = await _register(admin, receiver, ["*"])
    receiver.script.append(Answer(307, headers={"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"}))
    await app.add_subscriber("moved@example.com", lists=())

    await app.webhooks.drain()

    assert receiver.types() == ["subscriber.created"], "the redirect's target was never asked"
    [attempt] = (await admin.get(f"/webhooks/{endpoint['id']}/attempts")).json()["items"]
    assert attempt["status_code"] == 307 and "redirects are not followed" in attempt["error"]


async def test_no_more_than_the_allowed_requests_are_in_flight_per_endpoint(
    database_url: str, smtp: SMTPServer, receiver: Receiver
) -> None:
    async with spawn_app(
        database_url,
        smtp,
        **{**HOOK_SETTINGS, "webhook_endpoint_concurrency": 2, "webhook_timeout_seconds": 5},
    ) as app:
        admin = await admin_client(app)
        await _register(admin, receiver, ["*"])
        receiver.default = Answer(204, delay=0.2)
        for n in range(8):
            await app.add_subscriber(f"c{n}@example.com", lists=())

        import asyncio

        stopping = asyncio.Event()
        running = asyncio.create_task(app.webhooks.run(stopping))
        await receiver.wait_for(8)
        stopping.set()
        await running

    assert receiver.most_in_flight == 2


async def test_addresses_a_webhook_may_not_go_to_are_refused_at_save(
    database_url: str, smtp: SMTPServer
) -> None:
    async with spawn_app(database_url, smtp) as app:
        admin = await admin_client(app)
        for url, reason in [
            ("ftp://example.com/hooks", "only http:// and https://"),
            ("https://user:pass@example.com/hooks", "credentials"),
            ("http://127.0.0.1:8080/hooks", "127.0.0.1 is a loopback address"),
            ("http://localhost/hooks", "localhost resolves to"),
            ("http://10.1.2.3/hooks", "10.1.2.3 is a private address"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://[::ffff:192.168.0.1]/hooks", "192.168.0.1 is a private address"),
            ("http://[::1]/hooks", "loopback"),
            ("http://0.0.0.0/hooks", "unspecified"),
            ("https://example.com/hooks#top", "fragment"),
            ("not a url", "spaces, control and non-ASCII characters must be percent-encoded"),
            ("example.com/hooks", "only http:// and https://"),
        ]:
            response = await admin.post("/webhooks", {"url": url, "events": ["*"]})
            assert response.status_code == 422, url
            assert reason in response.json()["detail"], (url, response.json()["detail"])
        assert await app.pool.fetchval("SELECT count(*) FROM webhook_endpoints") == 0


async def test_a_name_that_resolves_to_a_private_address_is_refused_when_connecting(
    app: TestApp, admin: AdminClient, receiver: Receiver
) -> None:
    """Saved while private addresses were allowed (or while the name pointed elsewhere): the dispatcher checks
    again after resolving, and sends nothing."""
    response = await admin.post(
        "/webhooks", {"url": f"http://localhost:{receiver.port}/hooks", "events": ["*"]}
    )
    assert response.status_code == 201
    literal = await admin.post("/webhooks", {"url": receiver.url, "events": ["*"]})
    assert literal.status_code == 201
    strict = WebhookDispatcher(app.db, app.settings.model_copy(update={"webhook_allow_private": False}))
    try:
        await app.add_subscriber("private@example.com", lists=())
        await strict.drain()
    finally:
        await strict.close()

    assert receiver.received == []
    errors = await app.pool.fetch("SELECT error FROM webhook_attempts ORDER BY endpoint_id")
    assert errors[0]["error"].startswith("refused: localhost resolves to 127.0.0.1 is a loopback address")
    assert errors[1]["error"] == "refused: 127.0.0.1 is a loopback address"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"url": "https://example.com/h", "events": []}, "events"),
        ({"url": "https://example.com/h", "events": ["subscriber.deleted"]}, "unknown event type"),
        ({"url": "https://example.com/h", "events": ["*", "issue.sent"]}, "'*' already means every type"),
        ({"url": "https://example.com/h", "events": ["webhook.test"]}, "unknown event type"),
        ({"events": ["*"]}, "url"),
        ({"url": "https://example.com/h"}, "events"),
        ({"url": "https://example.com/h", "events": ["*"], "secret": "mine"}, "secret"),
    ],
)
async def test_bad_endpoints_are_refused_clearly(
    app: TestApp, admin: AdminClient, body: dict[str, Any], detail: str
) -> None:
    response = await admin.post("/webhooks", body)
    assert response.status_code == 422
    assert detail in response.text


async def test_unknown_endpoints_are_404(app: TestApp, admin: AdminClient) -> None:
    for response in [
        await admin.get("/webhooks/99"),
        await admin.patch("/webhooks/99", {"active": True}),
        await admin.delete("/webhooks/99"),
        await admin.get("/webhooks/99/attempts"),
        await admin.post("/webhooks/99/test"),
        await admin.post("/webhooks/99/replay?after=0"),
    ]:
        assert response.status_code == 404, response.request.url


async def test_a_deleted_endpoint_takes_its_history_with_it(
    app: TestApp, admin: AdminClient, receiver: Receiver
) -> None:
    endpoint = await _register(admin, receiver, ["*"])
    await app.add_subscriber("x@example.com", lists=())
    await app.webhooks.drain()
    assert (await admin.delete(f"/webhooks/{endpoint['id']}")).status_code == 204
    assert await app.pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
    assert await app.pool.fetchval("SELECT count(*) FROM webhook_attempts") == 0


async def test_an_erased_persons_waiting_events_go_out_without_them(
    app: TestApp, admin: AdminClient, receiver: Receiver
) -> None:
    await _register(admin, receiver, ["subscriber.created"])
    subscriber_id = await app.add_subscriber("erase.me@example.com", name="Erase Me", lists=())
    assert (await admin.delete(f"/subscribers/{subscriber_id}")).status_code == 204

    await app.webhooks.drain()

    [request] = receiver.received
    assert request.event["data"] == {"subscriber_id": subscriber_id, "status": "active"}
    assert b"erase" not in request.body.lower()
