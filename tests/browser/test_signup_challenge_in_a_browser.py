"""The sign-up form with the proof-of-work challenge on (NEWSLETTER_SIGNUP_CHALLENGE=pow), in a real browser
(Debian's Chromium driven by Playwright) against the real app and a real SMTP server in this process.

The story: a person opens the form, types their address and name, and clicks Subscribe once; the form's
script fetches a challenge, solves it with WebCrypto and sends the form, and the person reads that a
confirmation is on its way, which then arrives. The solving takes well under a second."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser import test_admin_in_a_browser as story
from tests.harness import SMTPServer, TestApp, spawn_app

pytestmark = pytest.mark.asyncio

chromium = story.chromium  # Debian's Chromium, as the other browser tests launch it

READER = "ada@example.com"


@pytest.fixture
async def pow_app(database_url: str, smtp: SMTPServer) -> AsyncIterator[TestApp]:
    async with spawn_app(database_url, smtp, signup_challenge="pow") as test_app:
        yield test_app


@pytest.fixture
async def page(chromium: Browser, pow_app: TestApp) -> AsyncIterator[Page]:
    context = await chromium.new_context(base_url=pow_app.settings.base_url)
    opened = await context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    opened.on(
        "console",
        lambda message: (
            problems.append(message.text)
            # A page without a favicon logs its 404; the answers the story sees are asserted in it.
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    yield opened
    await context.close()
    assert problems == []


async def test_a_person_signs_up_with_one_click_while_the_form_solves_the_challenge(
    page: Page, pow_app: TestApp
) -> None:
    await page.goto("/")
    await page.get_by_label("Email address").fill(READER)
    await page.get_by_label("Name").fill("Ada Lovelace")
    challenges = []
    page.on("request", lambda request: challenges.append(request.url) if "challenge" in request.url else None)

    started = time.monotonic()
    await page.get_by_role("button", name="Subscribe").click()
    await expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    took = time.monotonic() - started

    assert challenges == [f"{pow_app.settings.base_url}/subscriptions/challenge"]
    assert took < 5, f"the sign-up took {took:.2f} s"
    assert await pow_app.subscription_status(READER) == "pending"
    assert await pow_app.dispatch_all_pending() == 1
    assert len(pow_app.confirmation_links(READER)) == 1
    assert await pow_app.metric("newsletter_signup_challenges_total", outcome="verified") >= 1


async def test_a_solution_from_the_page_cannot_be_sent_twice(page: Page, pow_app: TestApp) -> None:
    """A bot that replays what the page sent is refused; the person who goes back to the form and sends it
    again with one click gets a new challenge solved and succeeds."""
    await page.goto("/")
    await page.get_by_label("Email address").fill(READER)
    sent = []
    page.on(
        "request",
        lambda request: sent.append(request.post_data or "") if request.method == "POST" else None,
    )
    await page.get_by_role("button", name="Subscribe").click()
    await expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()

    replayed = await pow_app.client.post(
        "/subscriptions", content=sent[0], headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert replayed.status_code == 422
    assert "already used" in replayed.text

    await page.go_back()  # from the page cache or anew: the spent solution is not sent again
    await page.get_by_label("Email address").fill("grace@example.com")
    await page.get_by_role("button", name="Subscribe").click()
    await expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    assert await pow_app.subscription_status("grace@example.com") == "pending"
