"""Signing up: what a person and an API client see, and what is stored and sent."""

from __future__ import annotations

import pytest

from newsletter.domain.vocabulary import OptIn, SubscriberStatus, SuppressionReason
from tests.harness import TestApp

pytestmark = pytest.mark.asyncio


async def test_valid_signup_is_accepted_stored_pending_and_sends_one_confirmation(app: TestApp) -> None:
    response = await app.subscribe("ada@example.com", "Ada Lovelace")

    assert response.status_code == 202
    assert await app.subscription_status("ada@example.com") == "pending"
    assert await app.dispatch_all_pending() == 1
    [received] = app.smtp.to("ada@example.com")
    assert received.message["To"] == "ada@example.com"
    assert "confirm" in received.message["Subject"].lower()
    [link] = app.confirmation_links("ada@example.com")
    assert link.startswith(f"{app.settings.base_url}/subscriptions/confirm?token=")


async def test_html_form_signup_answers_with_a_page(app: TestApp) -> None:
    response = await app.subscribe_form("grace@example.com", "Grace Hopper")

    assert response.status_code == 202
    assert response.headers["content-type"].startswith("text/html")
    assert "Check your inbox" in response.text
    assert await app.subscription_status("grace@example.com") == "pending"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "No Email"}, "email"),
        ({"email": "", "name": "Empty"}, "email"),
        ({"email": "not-an-email", "name": "Bad"}, "email"),
        ({"email": "two@@example.com"}, "email"),
        ({"email": "ok@example.com", "name": "x" * 300}, "name"),
        ({"email": "ok@example.com", "name": "Bell\u0007"}, "name"),
        ({"email": "ok@example.com", "name": 42}, "name"),
        ({"email": "ok@example.com", "list": "no-such-list"}, "list"),
    ],
)
async def test_invalid_fields_get_422_problem_and_nothing_is_stored(
    app: TestApp, body: dict[str, object], field: str
) -> None:
    response = await app.client.post("/subscriptions", json=body)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in response.json()["errors"]]
    assert await app.pool.fetchval("SELECT count(*) FROM subscribers") == 0
    assert await app.dispatch_all_pending() == 0
    assert app.smtp.received == []


async def test_invalid_form_comes_back_with_its_error_and_values(app: TestApp) -> None:
    response = await app.subscribe_form("not-an-email", "Ada")

    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/html")
    assert 'aria-invalid="true"' in response.text
    assert 'value="not-an-email"' in response.text
    assert await app.pool.fetchval("SELECT count(*) FROM subscribers") == 0


async def test_the_same_answer_for_new_pending_and_confirmed_addresses(app: TestApp) -> None:
    new = await app.subscribe("new@example.com")
    await app.subscribe("confirmed@example.com")
    await app.dispatch_all_pending()
    [link] = app.confirmation_links("confirmed@example.com")
    assert (await app.confirm(link)).status_code == 200
    pending = await app.subscribe("new@example.com")
    confirmed = await app.subscribe("confirmed@example.com")

    assert new.status_code == pending.status_code == confirmed.status_code == 202
    assert new.json() == pending.json() == confirmed.json()


async def test_a_pending_address_gets_a_new_email_and_a_confirmed_one_none(app: TestApp) -> None:
    await app.subscribe("pending@example.com")
    await app.subscribe("done@example.com")
    await app.dispatch_all_pending()
    await app.confirm(app.confirmation_links("done@example.com")[0])

    await app.subscribe("pending@example.com")
    await app.subscribe("done@example.com")
    await app.dispatch_all_pending()

    assert len(app.smtp.to("pending@example.com")) == 2
    assert len(app.smtp.to("done@example.com")) == 1


async def test_case_and_spaces_do_not_make_a_second_subscriber(app: TestApp) -> None:
    assert (await app.subscribe("Foo@Example.COM ")).status_code == 202
    assert (await app.subscribe("foo@example.com")).status_code == 202

    assert await app.pool.fetchval("SELECT count(*) FROM subscribers") == 1
    assert await app.pool.fetchval("SELECT count(*) FROM subscriptions") == 1


async def test_consent_evidence_is_recorded(app: TestApp) -> None:
    await app.client.post(
        "/subscriptions", json={"email": "ev@example.com"}, headers={"User-Agent": "EvidenceBrowser/1.0"}
    )
    await app.dispatch_all_pending()
    await app.client.post(
        "/subscriptions/confirm",
        data={"token": app.token_of(app.confirmation_links("ev@example.com")[0])},
        headers={"User-Agent": "ConfirmBrowser/2.0"},
    )

    row = await app.pool.fetchrow("SELECT * FROM subscriptions")
    assert row["source"] == "api"
    assert str(row["signup_ip"]) == "127.0.0.1"
    assert row["signup_user_agent"] == "EvidenceBrowser/1.0"
    assert row["confirm_user_agent"] == "ConfirmBrowser/2.0"
    assert row["confirmed_at"] is not None


async def test_a_single_opt_in_list_confirms_at_once_and_sends_nothing(app: TestApp) -> None:
    await app.add_list("open", "Open list", optin=OptIn.SINGLE)

    response = await app.subscribe("single@example.com", list="open")

    assert response.status_code == 202
    assert await app.subscription_status("single@example.com", "open") == "confirmed"
    assert await app.dispatch_all_pending() == 0


async def test_honeypot_filled_by_a_bot_is_answered_the_same_and_ignored(app: TestApp) -> None:
    response = await app.subscribe_form("bot@example.com", website="http://spam.example")

    assert response.status_code == 202
    assert await app.pool.fetchval("SELECT count(*) FROM subscribers") == 0


async def test_a_suppressed_or_blocklisted_address_gets_no_email(app: TestApp) -> None:
    await app.suppress("gone@example.com", SuppressionReason.HARD_BOUNCE)
    await app.add_subscriber("blocked@example.com", lists=[], person=SubscriberStatus.BLOCKLISTED)

    assert (await app.subscribe("gone@example.com")).status_code == 202
    assert (await app.subscribe("blocked@example.com")).status_code == 202

    assert await app.dispatch_all_pending() == 0
    assert app.smtp.received == []
