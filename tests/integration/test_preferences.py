"""The preference page (SPEC section 13), from the link in a received newsletter: the public lists and their
state, joining one without a second confirmation, a new name, leaving everything, the person's data, and its
erasure after a confirmation step; on the real app, database and SMTP server."""

from __future__ import annotations

import json
import re

import pytest

from newsletter.domain.tokens import PreferencesToken, UnsubscribeToken
from newsletter.domain.vocabulary import Visibility
from tests.harness import TestApp

pytestmark = pytest.mark.asyncio

ADA = "ada@example.com"


async def _link(app: TestApp, address: str = ADA) -> str:
    """The preference link of the newsletter `address` received, as a path."""
    await app.send_issue("News", "Hello.")
    await app.dispatch_all_pending()
    [received] = [r for r in app.smtp.to(address) if r.message["Subject"] == "News"]
    [link] = [link for link in received.links("plain") if "/preferences/" in link]
    assert f'href="{link}"' in received.body("html"), "the HTML footer carries the same link"
    return link.removeprefix(app.settings.base_url)


async def _people(app: TestApp) -> str:
    await app.add_list("weekly", "Weekly notes")
    await app.add_list("staff", "Staff only", visibility=Visibility.PRIVATE)
    await app.pool.execute("UPDATE lists SET visibility = 'public' WHERE slug = 'default'")
    await app.add_subscriber(ADA, name="Ada", lists=["default", "staff"])
    return await _link(app)


async def test_the_page_shows_the_public_lists_and_joins_one_without_a_confirmation(app: TestApp) -> None:
    link = await _people(app)
    emails_before = len(app.smtp.received)
    # The counters are the process's, shared by every test of the run: what this one adds is compared.
    confirmations_before = await app.metric("newsletter_confirmations_total", list="weekly")

    shown = await app.client.get(link)
    assert shown.status_code == 200
    assert shown.headers["cache-control"] == "no-store" and shown.headers["referrer-policy"] == "no-referrer"
    assert ADA in shown.text and "Weekly notes" in shown.text and "Subscribe to Weekly notes" in shown.text
    assert "Staff only" not in shown.text, "a private list is not on the page"
    weekly = await app.pool.fetchval("SELECT id FROM lists WHERE slug = 'weekly'")

    joined = await app.client.post(f"{link}/join", data={"list": str(weekly)})
    assert joined.status_code == 303 and joined.headers["location"] == f"{link}?done=joined"
    assert await app.subscription_status(ADA, "weekly") == "confirmed"
    evidence = await app.pool.fetchrow(
        "SELECT source, confirm_ip FROM subscriptions JOIN lists ON lists.id = list_id WHERE slug = 'weekly'"
    )
    assert evidence["source"] == "preferences" and str(evidence["confirm_ip"]) == "127.0.0.1"
    assert len(app.smtp.received) == emails_before, (
        "no second confirmation: the signed link proves the address"
    )
    confirmed = await app.pool.fetchrow(
        "SELECT data FROM events WHERE type = 'subscription.confirmed' ORDER BY id DESC LIMIT 1"
    )
    assert confirmed is not None and confirmed["data"]["list"] == "weekly", "an event, as any confirmation"
    assert "You are subscribed to that list." in (await app.client.get(joined.headers["location"])).text
    assert await app.metric("newsletter_confirmations_total", list="weekly") == confirmations_before + 1

    again = await app.client.post(f"{link}/join", data={"list": str(weekly)})
    assert again.headers["location"] == f"{link}?done=already"
    assert await app.metric("newsletter_confirmations_total", list="weekly") == confirmations_before + 1


async def test_only_public_lists_can_be_joined_and_not_by_a_blocklisted_person(app: TestApp) -> None:
    link = await _people(app)
    staff = await app.pool.fetchval("SELECT id FROM lists WHERE slug = 'staff'")
    await app.leave(ADA, "staff")
    for value in (str(staff), "999", "x", "", "1" * 40):
        refused = await app.client.post(f"{link}/join", data={"list": value})
        assert refused.status_code == 422, value
    assert await app.subscription_status(ADA, "staff") == "unsubscribed", "a private list takes no one back"

    await app.block(ADA)
    weekly = await app.pool.fetchval("SELECT id FROM lists WHERE slug = 'weekly'")
    refused = await app.client.post(f"{link}/join", data={"list": str(weekly)})
    assert refused.status_code == 409
    assert await app.subscription_status(ADA, "weekly") is None


async def test_a_new_name_and_a_refused_one(app: TestApp) -> None:
    link = await _people(app)
    renamed = await app.client.post(f"{link}/name", data={"name": "Ada Lovelace"})
    assert renamed.status_code == 303
    assert await app.pool.fetchval("SELECT name FROM subscribers WHERE email = $1", ADA) == "Ada Lovelace"
    refused = await app.client.post(f"{link}/name", data={"name": "x" * 300})
    assert refused.status_code == 422
    assert await app.pool.fetchval("SELECT name FROM subscribers WHERE email = $1", ADA) == "Ada Lovelace"


async def test_leaving_everything_and_coming_back(app: TestApp) -> None:
    link = await _people(app)
    left = await app.client.post(f"{link}/leave")
    assert left.status_code == 303
    statuses = await app.pool.fetch(
        "SELECT subscriptions.status FROM subscriptions JOIN subscribers ON subscribers.id = subscriber_id "
        "WHERE email = $1",
        ADA,
    )
    assert {row["status"] for row in statuses} == {"unsubscribed"}, "private lists too"
    assert (
        await app.pool.fetchval("SELECT reason FROM suppressions WHERE email = $1", ADA) == "unsubscribe_all"
    )
    assert (await app.client.post(f"{link}/leave")).status_code == 303, "a second click changes nothing"

    default = await app.pool.fetchval("SELECT id FROM lists WHERE slug = 'default'")
    await app.client.post(f"{link}/join", data={"list": str(default)})
    assert await app.subscription_status(ADA, "default") == "confirmed"
    assert await app.pool.fetchval("SELECT count(*) FROM suppressions") == 0, "the person took it back"
    assert await app.subscription_status(ADA, "staff") == "unsubscribed"


async def test_the_data_download_and_the_erasure_after_a_confirmation_step(app: TestApp) -> None:
    link = await _people(app)
    data = await app.client.get(f"{link}/data")
    assert data.status_code == 200 and "attachment" in data.headers["content-disposition"]
    document = json.loads(data.text)
    assert ADA in json.dumps(document)

    asked = await app.client.post(f"{link}/delete")
    assert asked.status_code == 200 and "Yes, delete my data" in asked.text
    assert await app.pool.fetchval("SELECT count(*) FROM subscribers") == 1, (
        "nothing goes before the second step"
    )

    done = await app.client.post(f"{link}/delete/confirm")
    assert done.status_code == 200 and "Your data is deleted" in done.text
    assert await app.tables_holding(ADA, "Ada") == []
    assert (await app.client.get(link)).status_code == 404
    assert (await app.client.post(f"{link}/delete/confirm")).status_code == 200, "a second click: still done"


async def test_a_link_that_was_not_signed_for_the_page_opens_nothing(app: TestApp) -> None:
    await _people(app)
    subscriber_id = await app.pool.fetchval("SELECT id FROM subscribers WHERE email = $1", ADA)
    key = app.settings.resolved_secret_key().encode()
    unsubscribe_token = UnsubscribeToken(subscriber_id, 1).sign(key)
    forged = PreferencesToken(subscriber_id).sign(b"another key of the same length, or not")
    for token in (unsubscribe_token, forged, "x" * 43, "nothing", "%00"):
        for method, path in (("GET", ""), ("POST", "/leave"), ("POST", "/name"), ("GET", "/data")):
            response = await app.client.request(method, f"/preferences/{token}{path}", data={"name": "Eve"})
            assert response.status_code in (404, 405), (token, path, response.status_code)
    assert await app.subscription_status(ADA, "default") == "confirmed"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", PreferencesToken(subscriber_id).sign(key))
