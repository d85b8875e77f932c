"""Confirming a subscription: GET never changes anything, POST confirms once, bad tokens are told apart."""

from __future__ import annotations

import pytest

from newsletter.domain.tokens import Token
from tests.harness import SMTPServer, TestApp, spawn_app

pytestmark = pytest.mark.asyncio


async def _link_for(app: TestApp, address: str) -> str:
    await app.subscribe(address)
    await app.dispatch_all_pending()
    [link] = app.confirmation_links(address)
    return link


async def test_get_shows_a_confirm_button_and_changes_nothing(app: TestApp) -> None:
    link = await _link_for(app, "ada@example.com")

    for _ in range(3):
        response = await app.client.get(link)
        assert response.status_code == 200
        assert '<button type="submit">Confirm</button>' in response.text

    assert await app.subscription_status("ada@example.com") == "pending"
    assert await app.pool.fetchval("SELECT count(*) FROM confirmation_tokens WHERE used_at IS NOT NULL") == 0


async def test_post_confirms_and_a_second_post_is_harmless(app: TestApp) -> None:
    link = await _link_for(app, "ada@example.com")

    first = await app.confirm(link)
    second = await app.confirm(link)

    assert first.status_code == 200
    assert "You are subscribed" in first.text
    assert second.status_code == 200
    assert await app.subscription_status("ada@example.com") == "confirmed"


async def test_a_used_token_cannot_confirm_again_after_unsubscribing(app: TestApp) -> None:
    link = await _link_for(app, "ada@example.com")
    await app.confirm(link)
    await app.leave("ada@example.com")

    response = await app.confirm(link)

    assert response.status_code == 200
    assert await app.subscription_status("ada@example.com") == "unsubscribed"


@pytest.mark.parametrize("token", ["", "short", "x" * 43 + "!", Token.generate().value, "A" * 2000])
async def test_unknown_or_malformed_tokens_get_404(app: TestApp, token: str) -> None:
    assert (await app.client.get("/subscriptions/confirm", params={"token": token})).status_code == 404
    assert (await app.client.post("/subscriptions/confirm", data={"token": token})).status_code == 404


async def test_an_expired_token_gets_410_and_a_way_to_get_a_new_email(app: TestApp) -> None:
    link = await _link_for(app, "late@example.com")
    await app.pool.execute("UPDATE confirmation_tokens SET expires_at = now() - interval '1 second'")

    page = await app.client.get(link)
    confirm = await app.confirm(link)

    assert page.status_code == 410
    assert confirm.status_code == 410
    assert 'action="/subscriptions/confirm/resend"' in confirm.text
    assert await app.subscription_status("late@example.com") == "pending"

    resend = await app.client.post("/subscriptions/confirm/resend", data={"token": app.token_of(link)})
    await app.dispatch_all_pending()

    assert resend.status_code == 202
    new_link = app.confirmation_links("late@example.com")[-1]
    assert new_link != link
    assert (await app.confirm(new_link)).status_code == 200
    assert await app.subscription_status("late@example.com") == "confirmed"


async def test_tokens_are_stored_only_as_hashes(app: TestApp) -> None:
    link = await _link_for(app, "ada@example.com")
    token = app.token_of(link)

    stored = await app.pool.fetchval("SELECT token_hash FROM confirmation_tokens")
    assert stored == Token(token).digest
    dump = await app.pool.fetchval(
        "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM confirmation_tokens) t"
    ) + await app.pool.fetchval("SELECT string_agg(d::text, ' ') FROM (SELECT * FROM deliveries) d")
    assert token not in dump


async def test_a_confirmation_email_queued_before_confirming_elsewhere_is_not_sent(app: TestApp) -> None:
    link = await _link_for(app, "ada@example.com")
    await app.subscribe("ada@example.com")  # a second email is queued...
    await app.confirm(link)  # ...but the first link is used before it goes out

    await app.dispatch_all_pending()

    assert len(app.smtp.to("ada@example.com")) == 1
    statuses = [row["status"] for row in await app.deliveries("ada@example.com")]
    assert statuses == ["sent", "cancelled"]


@pytest.mark.parametrize(("hours", "said", "minutes"), [(0.5, "30 minutes", 30), (1.5, "90 minutes", 90)])
async def test_a_fractional_validity_is_kept_to_the_minute(
    database_url: str, smtp: SMTPServer, hours: float, said: str, minutes: int
) -> None:
    async with spawn_app(database_url, smtp, confirmation_ttl_hours=hours) as app:
        link = await _link_for(app, "ada@example.com")
        lifetime = await app.pool.fetchval(
            "SELECT extract(epoch FROM expires_at - created_at) / 60 FROM confirmation_tokens"
        )
        confirmed = await app.confirm(link)

    assert round(lifetime) == minutes
    assert f"The link is valid for {said}." in smtp.received[0].body("plain")
    assert confirmed.status_code == 200
