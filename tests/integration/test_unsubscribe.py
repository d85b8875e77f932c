"""Unsubscribing: RFC 8058 one-click from a mail client, the page, and its effect on sends under way."""

from __future__ import annotations

import httpx
import pytest

from newsletter.domain.tokens import UnsubscribeToken
from tests.harness import AdminClient, TestApp, add_confirmed, admin_client

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def admin(app: TestApp) -> AdminClient:
    return await admin_client(app)


async def _issue(app: TestApp, admin: AdminClient, send: bool = True) -> int:
    issue_id: int = (await admin.post("/issues", {"subject": "News", "markdown": "Hello"})).json()["id"]
    if send:
        await admin.post(f"/issues/{issue_id}/send")
    return issue_id


async def _unsubscribe_url(app: TestApp, admin: AdminClient, address: str) -> str:
    await _issue(app, admin)
    await app.dispatch_all_pending()
    [received] = app.smtp.to(address)
    header = received.message["List-Unsubscribe"]
    assert header.startswith("<") and header.endswith(">")
    return str(header[1:-1])


async def test_every_newsletter_carries_the_unsubscribe_headers_and_a_visible_link(
    app: TestApp, admin: AdminClient
) -> None:
    [reader] = await add_confirmed(app.pool, 1)

    url = await _unsubscribe_url(app, admin, reader)

    [received] = app.smtp.to(reader)
    assert url.startswith(f"{app.settings.base_url}/unsubscribe/")
    assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received.message["List-Id"] == "Newsletter <default.localhost>"
    assert url in received.body("plain")
    assert f'href="{url}"' in received.body("html")


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
async def test_one_click_without_cookie_unsubscribes_with_200_and_no_redirect(
    app: TestApp, admin: AdminClient, encoding: str
) -> None:
    [reader] = await add_confirmed(app.pool, 1)
    url = await _unsubscribe_url(app, admin, reader)

    async with httpx.AsyncClient(follow_redirects=False) as mail_client:  # a fresh client: no cookie at all
        if encoding == "urlencoded":
            first = await mail_client.post(url, data={"List-Unsubscribe": "One-Click"})
        else:
            first = await mail_client.post(url, files={"List-Unsubscribe": (None, "One-Click")})
        again = await mail_client.post(url, data={"List-Unsubscribe": "One-Click"})

    assert first.status_code == again.status_code == 200
    assert "You are unsubscribed" in first.text
    assert await app.subscription_status(reader) == "unsubscribed"


async def test_get_never_unsubscribes(app: TestApp, admin: AdminClient) -> None:
    [reader] = await add_confirmed(app.pool, 1)
    url = await _unsubscribe_url(app, admin, reader)

    for _ in range(3):
        page = await app.client.get(url)
        assert page.status_code == 200
        assert "Unsubscribe from Newsletter" in page.text

    assert await app.subscription_status(reader) == "confirmed"


async def test_forged_or_altered_tokens_get_404(app: TestApp, admin: AdminClient) -> None:
    [reader] = await add_confirmed(app.pool, 1)
    url = await _unsubscribe_url(app, admin, reader)
    token = url.rsplit("/", 1)[1]
    altered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    forged = UnsubscribeToken(1, 1).sign(b"not the server's key")

    for bad in (altered, forged, "x", "A" * 43, "A" * 500):
        assert (await app.client.get(f"/unsubscribe/{bad}")).status_code == 404
        assert (
            await app.client.post(f"/unsubscribe/{bad}", data={"List-Unsubscribe": "One-Click"})
        ).status_code == 404
    assert await app.subscription_status(reader) == "confirmed"


async def test_an_unsubscribed_person_gets_neither_later_issues_nor_the_rest_of_one_being_sent(
    app: TestApp, admin: AdminClient
) -> None:
    readers = await add_confirmed(app.pool, 30)
    url = await _unsubscribe_url(app, admin, readers[0])
    assert (await app.client.post(url, data={"List-Unsubscribe": "One-Click"})).status_code == 200
    app.smtp.received.clear()
    await _issue(app, admin)
    app.settings.worker_batch_size = 5
    await app.worker.dispatch_once()
    last = readers[-1]
    [row] = [r for r in await app.deliveries(last) if r["status"] == "queued"]
    last_token = UnsubscribeToken(row["subscriber_id"], row["list_id"]).sign(
        app.settings.resolved_secret_key().encode()
    )

    one_click = await app.client.post(f"/unsubscribe/{last_token}", data={"List-Unsubscribe": "One-Click"})
    await app.dispatch_all_pending()

    assert one_click.status_code == 200

    recipients = {a for m in app.smtp.received for a in m.recipients}
    assert readers[0] not in recipients
    assert last not in recipients
    assert len(recipients) == 28
    statuses = [r["status"] for r in await app.deliveries(last)]
    assert statuses[-1] == "cancelled"


async def test_unsubscribing_from_every_list_suppresses_until_the_person_confirms_again(
    app: TestApp, admin: AdminClient
) -> None:
    [reader] = await add_confirmed(app.pool, 1)
    url = await _unsubscribe_url(app, admin, reader)

    response = await app.client.post(url, data={"scope": "all"})

    assert response.status_code == 200
    assert (
        await app.pool.fetchval("SELECT reason FROM suppressions WHERE email = $1", reader)
        == "unsubscribe_all"
    )
    # Signing up again is a new, explicit request: it gets its confirmation email, and confirming lifts the
    # suppression.
    await app.subscribe(reader)
    await app.dispatch_all_pending()
    [link] = app.confirmation_links(reader)
    assert (await app.confirm(link)).status_code == 200
    assert await app.pool.fetchval("SELECT count(*) FROM suppressions") == 0
    app.smtp.received.clear()
    await _issue(app, admin)
    await app.dispatch_all_pending()
    assert len(app.smtp.to(reader)) == 1


async def test_each_email_carries_a_verp_return_path_naming_its_delivery(
    app: TestApp, admin: AdminClient
) -> None:
    from newsletter.domain.verp import parse_verp

    [reader] = await add_confirmed(app.pool, 1)
    await _issue(app, admin)
    await app.dispatch_all_pending()

    [received] = app.smtp.to(reader)
    [row] = await app.deliveries(reader)
    assert received.mail_from.startswith("bounces+") and received.mail_from.endswith("@localhost")
    assert parse_verp(received.mail_from, secret_key=app.settings.resolved_secret_key().encode()) == row["id"]
