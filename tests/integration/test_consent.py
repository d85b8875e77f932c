"""Consent: an opt-out stands until the person themself confirms again, whatever anyone else posts, imports or
sends; a list takes public sign-ups only when its operator opened it, and its form says what one joins."""

from __future__ import annotations

import io

import pytest

from newsletter.services.audience.imports import import_csv
from tests.harness import AdminClient, TestApp, add_confirmed, admin_client
from tests.security.helpers import unsubscribe_url

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def admin(app: TestApp) -> AdminClient:
    return await admin_client(app)


async def _unsubscribed(app: TestApp, admin: AdminClient) -> str:
    """A confirmed reader who left with the one-click link of a newsletter."""
    [reader] = await add_confirmed(app.pool, 1)
    url = await unsubscribe_url(app, admin, reader)
    assert (await app.client.post(url, data={"List-Unsubscribe": "One-Click"})).status_code == 200
    assert await app.subscription_status(reader) == "unsubscribed"
    app.smtp.received.clear()
    return reader


async def _import(app: TestApp, address: str, list_slug: str = "default") -> dict[str, object]:
    report = await import_csv(app.db, io.BytesIO(f"email\n{address}\n".encode()), list_slug=list_slug)
    return report.as_dict()


async def test_a_strangers_sign_up_of_someone_who_left_sends_a_confirmation_and_changes_nothing(
    app: TestApp, admin: AdminClient
) -> None:
    reader = await _unsubscribed(app, admin)
    before = dict(await app.pool.fetchrow("SELECT * FROM subscriptions"))

    response = await app.subscribe(reader)
    await app.dispatch_all_pending()

    assert response.status_code == 202
    assert dict(await app.pool.fetchrow("SELECT * FROM subscriptions")) == before
    assert len(app.confirmation_links(reader)) == 1, "the person is asked, in their own mailbox"
    report = await _import(app, reader)
    assert report["subscribed"] == 0
    assert [row["reason"] for row in report["rejected"]] == [  # type: ignore[attr-defined]
        "unsubscribed from this list: not subscribed again"
    ]
    assert await app.subscription_status(reader) == "unsubscribed"


async def test_the_person_who_left_comes_back_only_by_confirming(app: TestApp, admin: AdminClient) -> None:
    reader = await _unsubscribed(app, admin)
    await app.subscribe(reader)
    await app.dispatch_all_pending()
    [link] = app.confirmation_links(reader)

    page = await app.client.get("/subscriptions/confirm", params={"token": app.token_of(link)})
    assert page.status_code == 200 and await app.subscription_status(reader) == "unsubscribed"
    assert (await app.confirm(link)).status_code == 200

    row = await app.pool.fetchrow("SELECT status, unsubscribed_at, confirmed_at FROM subscriptions")
    assert row["status"] == "confirmed" and row["unsubscribed_at"] is None
    await unsubscribe_url(app, admin, reader)  # the next issue reaches them
    assert len(app.smtp.to(reader)) == 2


async def test_a_link_made_before_the_person_left_brings_nothing_back(
    app: TestApp, admin: AdminClient
) -> None:
    await app.subscribe("late@example.com")
    await app.dispatch_all_pending()
    [link] = app.confirmation_links("late@example.com")
    await app.pool.execute(
        "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = now() + interval '1 second'"
    )

    confirmed = await app.confirm(link)

    assert confirmed.status_code == 410
    assert await app.subscription_status("late@example.com") == "unsubscribed"


async def test_a_list_not_open_to_sign_ups_answers_as_an_unknown_one(
    app: TestApp, admin: AdminClient
) -> None:
    created = await admin.post("/lists", {"slug": "vip", "name": "VIP", "optin": "single"})
    assert created.json()["visibility"] == "private"

    closed = await app.subscribe("stranger@example.com", list="vip")
    unknown = await app.subscribe("stranger@example.com", list="no-such-list")

    assert closed.status_code == unknown.status_code == 422
    assert closed.json() == unknown.json()
    assert closed.json()["detail"] == "list: Unknown list."
    assert await app.pool.fetchval("SELECT count(*) FROM subscribers") == 0
    assert (await app.client.get("/", params={"list": "vip"})).status_code == 404


async def test_a_public_single_opt_in_list_never_takes_back_someone_who_left(
    app: TestApp, admin: AdminClient
) -> None:
    reader = await _unsubscribed(app, admin)
    await admin.patch("/lists/1", {"optin": "single"})

    assert (await app.subscribe(reader)).status_code == 202
    await app.dispatch_all_pending()

    assert await app.subscription_status(reader) == "unsubscribed"
    assert len(app.confirmation_links(reader)) == 1


async def test_a_public_single_opt_in_list_asks_someone_who_left_every_list(
    app: TestApp, admin: AdminClient
) -> None:
    [reader] = await add_confirmed(app.pool, 1)
    url = await unsubscribe_url(app, admin, reader)
    await app.client.post(url, data={"scope": "all"})
    await admin.post("/lists", {"slug": "open", "name": "Open", "optin": "single", "visibility": "public"})

    await app.subscribe(reader, list="open")
    await app.dispatch_all_pending()

    assert await app.subscription_status(reader, "open") == "pending"
    assert len(app.confirmation_links(reader)) == 1


async def test_the_sign_up_page_names_its_list_and_a_missing_one_is_not_found(
    app: TestApp, admin: AdminClient
) -> None:
    await admin.post(
        "/lists",
        {"slug": "garden", "name": "Weekly Garden Notes", "description": "Seeds", "visibility": "public"},
    )

    page = await app.client.get("/", params={"list": "garden"})
    missing = await app.client.get("/", params={"list": "no-such-list"})

    assert page.status_code == 200
    assert "Subscribe to Weekly Garden Notes" in page.text and "Seeds" in page.text
    assert 'name="list" value="garden"' in page.text
    assert missing.status_code == 404


async def test_lists_are_opened_and_closed_in_the_api_and_the_admin_shows_it(
    app: TestApp, admin: AdminClient
) -> None:
    created = (await admin.post("/lists", {"slug": "weekly", "name": "Weekly"})).json()
    opened = await admin.patch(f"/lists/{created['id']}", {"visibility": "public"})

    assert opened.json()["visibility"] == "public"
    assert (await app.subscribe("ada@example.com", list="weekly")).status_code == 202
    assert (await admin.patch(f"/lists/{created['id']}", {"visibility": "secret"})).status_code == 422
