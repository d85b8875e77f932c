"""The admin pages of outgoing webhooks and of the event record, as an operator uses them without JavaScript,
against the real server, a real receiver that verifies every signature, and the real dispatcher."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from newsletter.services.integrations import webhooks
from tests.admin import AdminBrowser, create_admin, signed_in
from tests.harness import SMTPServer, TestApp, add_confirmed, spawn_app
from tests.integration.test_webhook_endpoints import HOOK_SETTINGS
from tests.receiver import Answer, Receiver, running_receiver

pytestmark = pytest.mark.asyncio

SECRET = re.compile(r'<code class="secret" id="signing-secret">([^<]+)</code>')
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
ATTEMPT_ROW = re.compile(
    r"<tr><td>\d{4}-\d\d-\d\d [\d:]+ UTC</td><td>([a-z.]+) <span class=\"hint\">(\d+)</span>"
)
EVENT_ROW = re.compile(r'<tr><td class="num">(\d+)</td><td>([a-z.]+)</td>')


@pytest.fixture
async def app(database_url: str, smtp: SMTPServer) -> AsyncIterator[TestApp]:
    async with spawn_app(database_url, smtp, **HOOK_SETTINGS) as test_app:
        yield test_app


@pytest.fixture
async def browser(app: TestApp) -> AsyncIterator[AdminBrowser]:
    await create_admin(app)
    async with await signed_in(app) as signed:
        yield signed


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as running:
        yield running


async def _create(
    browser: AdminBrowser, receiver: Receiver, events: list[str], description: str = ""
) -> tuple[int, str]:
    """An endpoint created with the form, for `receiver`, which now knows its secret; its id and the page."""
    created = await browser.post(
        "/admin/webhooks",
        {"url": receiver.url, "description": description, "events": events, "active": "yes"},
    )
    assert created.status_code == 201, created.text[:2000]
    secret = SECRET.search(created.text)
    assert secret is not None, "the secret is shown when the endpoint is created"
    receiver.secret = html.unescape(secret[1])
    endpoint_id = re.search(r'action="/admin/webhooks/(\d+)/test"', created.text)
    assert endpoint_id is not None
    return int(endpoint_id[1]), created.text


async def _state(app: TestApp, endpoint_id: int) -> dict[str, Any]:
    return await webhooks.get_endpoint(app.db, endpoint_id)


async def test_an_endpoint_is_created_its_secret_shown_once_and_its_test_event_arrives_signed(
    app: TestApp, browser: AdminBrowser, receiver: Receiver
) -> None:
    endpoint_id, page = await _create(browser, receiver, ["subscription.confirmed"], "The CRM")
    assert receiver.secret is not None and receiver.secret.startswith("whsec_")
    assert "shown only this once" in page

    listed = await browser.get("/admin/webhooks")
    shown = await browser.get(f"/admin/webhooks/{endpoint_id}")
    for later in (listed, shown):
        assert later.status_code == 200
        assert receiver.secret not in later.text and "signing-secret" not in later.text
    assert f'href="/admin/webhooks/{endpoint_id}">{receiver.url}</a>' in listed.text
    assert "The CRM" in listed.text and "subscription.confirmed" in listed.text

    tested = await browser.post(f"/admin/webhooks/{endpoint_id}/test")
    assert tested.headers["location"] == f"/admin/webhooks/{endpoint_id}/attempts"
    assert "A test event" in (await browser.follow(tested)).text
    assert await app.webhooks.drain() == 1

    [request] = receiver.received
    assert request.verified, "the receiver verifies the signature with the secret the page showed"
    assert request.event["type"] == "webhook.test"
    attempts = await browser.get(f"/admin/webhooks/{endpoint_id}/attempts")
    assert ATTEMPT_ROW.findall(attempts.text) == [("webhook.test", str(request.event["id"]))]
    assert (
        "<td>204</td>" in attempts.text and '<span class="status delivered">delivered</span>' in attempts.text
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/hooks", "url: only http:// and https:// URLs can receive webhooks"),
        ("https://user:pass@example.com/hooks", "url: credentials in the URL are not accepted"),
        ("http://10.1.2.3/hooks", "url: 10.1.2.3 is a private address; webhooks go to public addresses only"),
    ],
)
async def test_a_refused_url_is_explained_on_the_form_which_keeps_what_was_typed(
    database_url: str, smtp: SMTPServer, url: str, message: str
) -> None:
    async with spawn_app(database_url, smtp) as app:  # private addresses refused, as in production
        await create_admin(app)
        async with await signed_in(app) as browser:
            response = await browser.post(
                "/admin/webhooks",
                {"url": url, "description": "Billing", "events": ["issue.sent", "delivery.bounced"]},
            )
            assert response.status_code == 422
            assert f'<p class="error" role="alert">{html.escape(message)}' in response.text
            assert f'name="url" required maxlength="2000" inputmode="url" value="{html.escape(url)}"' in (
                response.text
            )
            assert 'value="Billing"' in response.text
            checked = re.findall(r'name="events" value="([a-z.*]+)" checked', response.text)
            assert checked == ["issue.sent", "delivery.bounced"]
            assert re.search(r'name="active" value="yes">', response.text), "active stays unticked"
            assert await app.pool.fetchval("SELECT count(*) FROM webhook_endpoints") == 0


async def test_an_edit_that_is_refused_changes_nothing_and_a_good_one_is_saved(
    app: TestApp, browser: AdminBrowser, receiver: Receiver
) -> None:
    endpoint_id, _ = await _create(browser, receiver, ["*"])

    refused = await browser.post(
        f"/admin/webhooks/{endpoint_id}", {"url": "gopher://example.com", "events": ["*"], "active": "yes"}
    )
    mixed = await browser.post(
        f"/admin/webhooks/{endpoint_id}",
        {"url": receiver.url, "events": ["*", "issue.sent"], "active": "yes"},
    )
    none = await browser.post(f"/admin/webhooks/{endpoint_id}", {"url": receiver.url, "active": "yes"})

    assert refused.status_code == mixed.status_code == none.status_code == 422
    assert "only http:// and https://" in refused.text and 'value="gopher://example.com"' in refused.text
    assert "already means every type" in html.unescape(mixed.text)
    assert "name at least one event type" in html.unescape(none.text)
    assert (await _state(app, endpoint_id))["events"] == ["*"]

    saved = await browser.post(
        f"/admin/webhooks/{endpoint_id}",
        {"url": receiver.url, "description": "Sign-ups", "events": ["subscriber.created"], "active": "yes"},
    )
    assert "The endpoint is saved." in (await browser.follow(saved)).text
    endpoint = await _state(app, endpoint_id)
    assert (endpoint["description"], endpoint["events"], endpoint["active"]) == (
        "Sign-ups",
        ["subscriber.created"],
        True,
    )
    await app.add_subscriber("ada@example.com", lists=("default",))
    await app.webhooks.drain()
    assert receiver.types() == ["subscriber.created"], "the confirmation it no longer wants is not sent"


async def test_an_endpoint_turned_off_gets_nothing_until_it_is_turned_on(
    app: TestApp, browser: AdminBrowser, receiver: Receiver
) -> None:
    endpoint_id, _ = await _create(browser, receiver, ["subscriber.created"])

    off = await browser.post(f"/admin/webhooks/{endpoint_id}/active", {"active": "no"})
    page = (await browser.follow(off)).text
    assert "The endpoint is off" in page and "turned off by an operator" in page
    await app.add_subscriber("while-off@example.com", lists=())
    await app.webhooks.drain()
    assert receiver.received == []
    assert "was turned off" not in (await browser.get("/admin")).text, "the operator knows; no notice"

    on = await browser.post(f"/admin/webhooks/{endpoint_id}/active", {"active": "yes"})
    assert "The endpoint is on" in (await browser.follow(on)).text
    await app.add_subscriber("back-on@example.com", lists=())
    await app.webhooks.drain()
    assert [event["data"]["email"] for event in receiver.events()] == ["back-on@example.com"]

    # Unticking "active" in the edit form turns it off too.
    await browser.post(
        f"/admin/webhooks/{endpoint_id}", {"url": receiver.url, "events": ["subscriber.created"]}
    )
    assert (await _state(app, endpoint_id))["active"] is False


async def test_an_endpoint_turned_off_for_failing_is_on_the_dashboard_until_turned_on_again(
    app: TestApp, browser: AdminBrowser, receiver: Receiver
) -> None:
    endpoint_id, _ = await _create(browser, receiver, ["subscriber.created"])
    receiver.default = Answer(410)
    await app.add_subscriber("gone@example.com", lists=())
    await app.webhooks.drain()

    dashboard = (await browser.get("/admin")).text
    notice = re.search(r'<p class="warning" role="note">(.*?)</p>', dashboard, re.DOTALL)
    assert notice is not None, "the dashboard tells of the endpoint turned off"
    assert f'<a href="/admin/webhooks/{endpoint_id}">{receiver.url}</a>' in notice[1]
    assert "the endpoint answered 410 Gone" in notice[1]
    listed = (await browser.get("/admin/webhooks")).text
    assert '<span class="status failed">off</span>' in listed and "410 Gone" in listed
    attempts = (await browser.get(f"/admin/webhooks/{endpoint_id}/attempts")).text
    assert "<td>410</td>" in attempts

    receiver.default = Answer(204)
    on = await browser.post(f"/admin/webhooks/{endpoint_id}/active", {"active": "yes"})
    assert on.status_code == 303
    endpoint = await _state(app, endpoint_id)
    assert endpoint["active"] and endpoint["disabled_at"] is None and endpoint["failing_since"] is None
    assert 'class="warning"' not in (await browser.get("/admin")).text
    await app.add_subscriber("again@example.com", lists=())
    await app.webhooks.drain()
    assert receiver.types()[-1] == "subscriber.created" and len(receiver.received) == 2


async def test_events_after_an_id_are_replayed_from_the_page(
    app: TestApp, browser: AdminBrowser, receiver: Receiver
) -> None:
    endpoint_id, _ = await _create(browser, receiver, ["subscriber.created"])
    for n in range(3):
        await app.add_subscriber(f"r{n}@example.com", lists=())
    await app.webhooks.drain()
    first, second, third = receiver.received
    receiver.received.clear()
    await app.events_settled()

    replayed = await browser.post(f"/admin/webhooks/{endpoint_id}/replay", {"after": str(first.event["id"])})
    assert (
        f"2 events after event {first.event['id']} queued to be sent again."
        in (await browser.follow(replayed)).text
    )
    await app.webhooks.drain()
    assert [r.headers["webhook-id"] for r in receiver.received] == [
        second.headers["webhook-id"],
        third.headers["webhook-id"],
    ]
    assert all(r.verified for r in receiver.received)

    for bad in ("", "-1", "one", "9" * 30):
        refused = await browser.post(f"/admin/webhooks/{endpoint_id}/replay", {"after": bad})
        assert "Give the id of an event" in (await browser.follow(refused)).text, bad


async def test_an_endpoint_is_deleted_only_when_confirmed(
    app: TestApp, browser: AdminBrowser, receiver: Receiver
) -> None:
    endpoint_id, _ = await _create(browser, receiver, ["*"])

    unconfirmed = await browser.post(f"/admin/webhooks/{endpoint_id}/delete")
    assert "Tick the box to confirm the deletion." in (await browser.follow(unconfirmed)).text
    assert (await _state(app, endpoint_id))["url"] == receiver.url

    deleted = await browser.post(f"/admin/webhooks/{endpoint_id}/delete", {"confirm": "yes"})
    assert deleted.headers["location"] == "/admin/webhooks"
    listed = (await browser.follow(deleted)).text
    assert f"Webhook endpoint {endpoint_id} is deleted" in listed and receiver.url not in listed
    assert (await browser.get(f"/admin/webhooks/{endpoint_id}")).status_code == 404
    assert (await browser.get(f"/admin/webhooks/{endpoint_id}/attempts")).status_code == 404
    await app.add_subscriber("after@example.com", lists=())
    await app.webhooks.drain()
    assert receiver.received == []


async def test_attempts_are_shown_newest_first_a_page_at_a_time(
    app: TestApp, browser: AdminBrowser, receiver: Receiver
) -> None:
    endpoint_id, _ = await _create(browser, receiver, ["delivery.bounced"])
    sent = [(await webhooks.send_test(app.db, endpoint_id))["event_id"] for _ in range(55)]
    while len(receiver.received) < 55:
        assert await app.webhooks.drain() > 0

    first = await browser.get(f"/admin/webhooks/{endpoint_id}/attempts")
    shown = [int(event_id) for _, event_id in ATTEMPT_ROW.findall(first.text)]
    next_link = re.search(r'rel="next" href="([^"]+)"', first.text)
    assert next_link is not None
    second = await browser.client.get(html.unescape(next_link[1]))
    rest = [int(event_id) for _, event_id in ATTEMPT_ROW.findall(second.text)]

    assert len(shown) == 50 and len(rest) == 5
    assert sorted(shown + rest) == sorted(sent), "every attempt once, none on both pages"
    attempted = await app.pool.fetch(
        "SELECT event_id FROM webhook_attempts WHERE endpoint_id = $1 ORDER BY id DESC", endpoint_id
    )
    assert shown + rest == [row["event_id"] for row in attempted], "newest first"
    assert 'rel="next"' not in second.text and "First page" in second.text


async def test_the_events_page_shows_a_sign_up_filters_by_type_and_pages(
    app: TestApp, browser: AdminBrowser
) -> None:
    await app.subscribe("ada@example.com", "Ada")
    await app.dispatch_all_pending()
    await app.confirm(app.confirmation_links("ada@example.com")[0])

    page = (await browser.get("/admin/events")).text
    assert "They are kept for 30 days" in page
    assert [kind for _, kind in EVENT_ROW.findall(page)] == [
        "subscription.confirmed",
        "delivery.sent",
        "subscription.pending",
        "subscriber.created",
    ]
    confirmed = re.search(
        r"<td>subscription.confirmed</td><td>[^<]+</td><td>([^<]*)</td><td><code>([^<]+)</code>", page
    )
    assert confirmed is not None and confirmed[1] == "ada@example.com"
    data = html.unescape(confirmed[2])
    assert '"list":"default"' in data and '"email":"ada@example.com"' in data and ", " not in data

    only = (await browser.get("/admin/events", type="subscription.confirmed")).text
    assert [kind for _, kind in EVENT_ROW.findall(only)] == ["subscription.confirmed"]
    assert '<option value="subscription.confirmed" selected>' in only
    unknown = (await browser.get("/admin/events", type="subscription.nonsense")).text
    assert len(EVENT_ROW.findall(unknown)) == 4, "an unknown type filters nothing out"

    await add_confirmed(app.pool, 70)
    created = [
        row["id"]
        for row in await app.pool.fetch(
            "SELECT id FROM events WHERE type = 'subscriber.created' ORDER BY id DESC"
        )
    ]
    assert len(created) == 71
    first = (await browser.get("/admin/events", type="subscriber.created")).text
    next_link = re.search(r'rel="next" href="([^"]+)"', first)
    assert next_link is not None and "type=subscriber.created" in html.unescape(next_link[1])
    second = (await browser.client.get(html.unescape(next_link[1]))).text
    pages = [[int(event_id) for event_id, _ in EVENT_ROW.findall(text)] for text in (first, second)]
    assert [len(ids) for ids in pages] == [50, 21]
    assert pages[0] + pages[1] == created, "newest first, every event once"
    assert {kind for _, kind in EVENT_ROW.findall(first + second)} == {"subscriber.created"}


async def test_the_pages_are_in_the_nav_behind_the_login_and_under_the_admin_policy(
    app: TestApp, browser: AdminBrowser, receiver: Receiver
) -> None:
    endpoint_id, _ = await _create(browser, receiver, ["*"])
    dashboard = (await browser.get("/admin")).text
    assert '<a href="/admin/webhooks">Webhooks</a>' in dashboard
    assert '<a href="/admin/events">Events</a>' in dashboard
    pages = [
        "/admin/webhooks",
        f"/admin/webhooks/{endpoint_id}",
        f"/admin/webhooks/{endpoint_id}/attempts",
        "/admin/events",
    ]
    for path in pages:
        response = await browser.get(path)
        assert response.status_code == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        assert response.headers["cache-control"] == "no-store", path
        assert not INLINE_SCRIPT.search(response.text) and 'style="' not in response.text, path
        section = "/".join(path.split("/")[:3])
        assert f'<a href="{section}" aria-current="page">' in response.text, path

    async with AdminBrowser(app) as stranger:
        for path in pages:
            response = await stranger.get(path)
            assert response.status_code == 303 and response.headers["location"].startswith("/admin/login")
        forged = await stranger.client.post(
            f"/admin/webhooks/{endpoint_id}/delete", data={"confirm": "yes", "csrf_token": "x"}
        )
        assert forged.status_code == 303 and forged.headers["location"] == "/admin/login"
    no_token = await browser.post(f"/admin/webhooks/{endpoint_id}/delete", {"confirm": "yes"}, csrf=False)
    assert no_token.status_code == 403
    assert (await _state(app, endpoint_id))["url"] == receiver.url
