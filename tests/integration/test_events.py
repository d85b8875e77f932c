"""The event record (SPEC section 11): each change writes its event in its own transaction, the API replays
them by cursor without skipping one that commits late, erasure takes the person out, retention trims."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from newsletter.domain.vocabulary import Reporter, ReportKind, SubscriberStatus, SuppressionReason
from newsletter.services.audience import subscribers
from newsletter.services.compliance.reports import BounceRules, DeliveryEvent, apply_events
from newsletter.services.integrations.events import trim_events
from tests.harness import AdminClient, TestApp, admin_client

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def admin(app: TestApp) -> AdminClient:
    return await admin_client(app)


async def _events(admin: AdminClient, **params: Any) -> list[dict[str, Any]]:
    response = await admin.get("/events", **params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_sign_up_and_its_confirmation_are_told_in_order(app: TestApp, admin: AdminClient) -> None:
    await app.subscribe("ada@example.com", "Ada")
    await app.dispatch_all_pending()
    await app.confirm(app.confirmation_links("ada@example.com")[0])

    events = await _events(admin)

    assert [event["type"] for event in events] == [
        "subscriber.created",
        "subscription.pending",
        "delivery.sent",
        "subscription.confirmed",
    ]
    ids = [event["id"] for event in events]
    assert ids == sorted(ids)
    created, pending, sent, confirmed = (event["data"] for event in events)
    subscriber_id = created["subscriber_id"]
    assert created == {
        "subscriber_id": subscriber_id,
        "email": "ada@example.com",
        "name": "Ada",
        "status": "active",
    }
    assert pending["list"] == "default" and pending["subscriber_id"] == subscriber_id
    assert pending["source"] == "api"  # the JSON sign-up
    assert sent["kind"] == "confirmation" and sent["email"] == "ada@example.com"
    assert confirmed["list"] == "default" and confirmed["email"] == "ada@example.com"


async def test_the_cursor_reads_on_and_types_filter(app: TestApp, admin: AdminClient) -> None:
    for n in range(5):
        await app.add_subscriber(f"reader{n}@example.com")

    first = await admin.get("/events", limit=3)
    body = first.json()
    assert [e["data"]["email"] for e in body["items"]] == [
        "reader0@example.com",
        "reader0@example.com",
        "reader1@example.com",
    ]
    rest = await _events(admin, after=body["next_after"])
    assert [e["data"]["email"] for e in rest] == [
        "reader1@example.com",
        *(f"reader{n}@example.com" for n in (2, 2, 3, 3, 4, 4)),
    ]
    confirmed = await _events(admin, type="subscription.confirmed")
    assert [e["data"]["email"] for e in confirmed] == [f"reader{n}@example.com" for n in range(5)]
    both = await admin.client.get(
        "/api/v1/events?type=subscriber.created&type=subscription.confirmed&limit=1000", headers=admin.headers
    )
    assert len(both.json()["items"]) == 10

    # Nothing newer: the cursor stays where it was, to poll from.
    last = rest[-1]["id"]
    empty = (await admin.get("/events", after=last)).json()
    assert empty == {"items": [], "next_after": last}


async def test_an_event_that_commits_late_is_not_skipped(app: TestApp, admin: AdminClient) -> None:
    """A transaction that began first writes the smaller id and commits last: a reader polling with the
    largest id it saw would never see it."""
    slow = await asyncpg.connect(app.settings.database_url.get_secret_value())  # type: ignore[union-attr]
    try:
        transaction = slow.transaction()
        await transaction.start()
        await slow.execute("INSERT INTO subscribers (email, name) VALUES ('slow@example.com', '')")
        await app.pool.execute("INSERT INTO subscribers (email, name) VALUES ('quick@example.com', '')")

        seen = (await admin.get("/events")).json()
        assert seen["items"] == [], "nothing is read past a transaction still running"

        await transaction.commit()
    finally:
        await slow.close()

    events = await _events(admin, after=seen["next_after"] or 0)
    assert [e["data"]["email"] for e in events] == ["slow@example.com", "quick@example.com"]
    assert events[0]["id"] < events[1]["id"]


async def test_a_change_that_rolls_back_leaves_no_event(app: TestApp, admin: AdminClient) -> None:
    subscriber_id = await app.add_subscriber("grace@example.com", lists=())
    before = await _events(admin)

    with pytest.raises(RuntimeError):
        async with app.db.transaction():
            await subscribers.update_subscriber(app.db, subscriber_id, status=SubscriberStatus.BLOCKLISTED)
            raise RuntimeError("the request failed after the change")

    assert await _events(admin) == before
    await subscribers.update_subscriber(app.db, subscriber_id, status=SubscriberStatus.BLOCKLISTED)
    [updated] = await _events(admin, type="subscriber.updated")
    assert updated["data"] == {
        "subscriber_id": subscriber_id,
        "email": "grace@example.com",
        "status": "blocklisted",
    }


async def test_an_issue_its_deliveries_and_their_reports_are_events(app: TestApp, admin: AdminClient) -> None:
    await app.add_subscriber("one@example.com")
    await app.add_subscriber("two@example.com")
    issue_id = await app.send_issue("Autumn")
    await app.dispatch_all_pending()
    [copy] = await app.deliveries("two@example.com")
    bounce = DeliveryEvent.parse(
        Reporter.DSN, "x1", ReportKind.HARD_BOUNCE, "two@example.com", None, "550 no such user", copy["id"]
    )
    complaint = DeliveryEvent.parse(Reporter.DSN, "x2", ReportKind.COMPLAINT, "one@example.com", None)
    assert bounce is not None and complaint is not None
    await apply_events(app.db, [bounce, complaint], BounceRules())

    types = [(e["type"], e["data"].get("email")) for e in await _events(admin, limit=1000)]
    assert ("issue.sending", None) in types and ("issue.sent", None) in types
    assert types.count(("delivery.sent", "one@example.com")) == 1
    assert ("delivery.bounced", "two@example.com") in types
    assert ("delivery.complained", "one@example.com") in types
    assert ("suppression.added", "two@example.com") in types
    assert ("subscription.unsubscribed", "two@example.com") in types
    [sending] = await _events(admin, type="issue.sending")
    assert sending["data"]["issue_id"] == issue_id and sending["data"]["total"] == 2


async def test_erasure_takes_the_person_out_of_the_record(app: TestApp, admin: AdminClient) -> None:
    await app.subscribe("zoe.erasable@example.com", "Zoe Erasable")
    await app.dispatch_all_pending()
    await app.suppress(
        "zoe.erasable@example.com", SuppressionReason.MANUAL, "asked by zoe.erasable@example.com"
    )
    subscriber_id = await app.pool.fetchval(
        "SELECT id FROM subscribers WHERE email = 'zoe.erasable@example.com'"
    )

    assert (await admin.delete(f"/subscribers/{subscriber_id}")).status_code == 204

    events = await _events(admin, limit=1000)
    record = str(events)
    assert "zoe" not in record.lower() and "Erasable" not in record
    assert [e["data"] for e in events if e["type"] == "subscriber.erased"] == [
        {"subscriber_id": subscriber_id}
    ]
    assert not [e for e in events if e["type"] == "suppression.removed"], (
        "erasure is not an operator's change"
    )
    assert await app.pool.fetchval("SELECT count(*) FROM events WHERE address IS NOT NULL") == 0


async def test_events_past_the_retention_period_are_trimmed(app: TestApp, admin: AdminClient) -> None:
    for n in range(3):
        await app.add_subscriber(f"old{n}@example.com", lists=())
    await app.pool.execute("UPDATE events SET created_at = now() - interval '31 days'")
    await app.add_subscriber("new@example.com", lists=())

    assert await trim_events(app.db, 30) == 3

    assert [e["data"]["email"] for e in await _events(admin)] == ["new@example.com"]


async def test_the_export_holds_the_persons_events(app: TestApp, admin: AdminClient) -> None:
    subscriber_id = await app.add_subscriber("kim@example.com", lists=())
    export = (await admin.get(f"/subscribers/{subscriber_id}/export")).json()
    assert [e["type"] for e in export["events"]] == ["subscriber.created"]


@pytest.mark.parametrize(
    "query",
    [
        "type=subscriber.deleted",
        "after=-1",
        "after=abc",
        "limit=0",
        "limit=1001",
        "after=99999999999999999999",
    ],
)
async def test_bad_queries_are_refused_clearly(app: TestApp, admin: AdminClient, query: str) -> None:
    response = await admin.client.get(f"/api/v1/events?{query}", headers=admin.headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_read_token_reads_the_events_and_no_token_does_not(app: TestApp) -> None:
    await app.add_subscriber("lee@example.com", lists=())
    reader = await admin_client(app, scope="read")
    assert len(await _events(reader)) == 1
    assert (await app.client.get("/api/v1/events")).status_code == 401
