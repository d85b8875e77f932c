"""Segments in a real browser (Chromium driven by Playwright), against `newsletter serve` and `newsletter
worker`; the service and the browser are those of test_admin_in_a_browser.

The story of issue 16: an operator types a segment with a typo and sees at once where it goes wrong, fixes it
and sees the live count, saves it, and sends an issue to list `weekly` restricted to it; the SMTP server
receives exactly the matching confirmed people. A screenshot of every page is saved in tests/screenshots/.
"""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest
from playwright.async_api import Page, expect

from tests.browser import test_admin_in_a_browser as story
from tests.browser.test_admin_in_a_browser import Watched, log_in, snap
from tests.harness import SMTPServer

pytestmark = pytest.mark.asyncio

service, chromium, watched, page = story.service, story.chromium, story.watched, story.page

TYPO = 'attributes.plan = "pro" and confirmd_at > 30d'
FIXED = 'attributes.plan = "pro" and confirmed_at > 30d'
# Who is on weekly, and why each is or is not in the segment.
PEOPLE = {
    "ana@example.com": ("pro", "1 day", True),
    "bea@example.com": ("pro", "3 days", True),
    "cid@example.com": ("free", "1 day", False),
    "dan@example.com": ("pro", "90 days", False),
}


async def _people(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO lists (slug, name) VALUES ('weekly', 'Weekly')")
        for email, (plan, ago, _) in PEOPLE.items():
            await conn.execute(
                """
                WITH person AS (
                    INSERT INTO subscribers (email, attributes)
                    VALUES ($1, jsonb_build_object('plan', $2::text)) RETURNING id
                )
                INSERT INTO subscriptions (subscriber_id, list_id, status, confirmed_at, source)
                SELECT person.id, lists.id, 'confirmed', now() - $3::text::interval, 'test'
                FROM person, lists WHERE lists.slug = 'weekly'
                """,
                email,
                plan,
                ago,
            )
    finally:
        await conn.close()


async def test_an_operator_segments_a_list_and_sends_to_it_in_a_browser(
    page: Page, watched: Watched, smtp: SMTPServer, database_url: str
) -> None:
    await _people(database_url)
    await log_in(page)
    await page.get_by_role("navigation", name="Sections").get_by_role("link", name="Segments").click()
    await expect(page.get_by_role("heading", name="Segments", level=1)).to_be_visible()
    form = page.locator("form[action='/admin/segments']")
    await form.get_by_label("Name").fill("Pro, this month")
    expression = form.get_by_label("Expression")
    await expression.fill(TYPO)
    answer = form.locator("[data-segment-answer]")
    await expect(answer).to_contain_text("at column 29: unknown field 'confirmd_at'")
    await expect(answer.locator("pre")).to_have_text(TYPO + "\n" + " " * 28 + "^")
    await expect(expression).to_have_attribute("aria-invalid", "true")
    await snap(page, "40-segment-typo")

    await expression.fill(FIXED)
    await expect(answer).to_have_text("2 people match.")
    await snap(page, "41-segment-counted")
    await form.get_by_role("button", name="Save segment").click()
    await expect(page).to_have_url(re.compile(r"/admin/segments/\d+$"))
    await expect(page.get_by_text("2 active people match")).to_be_visible()

    await page.get_by_role("navigation", name="Sections").get_by_role("link", name="Issues").click()
    create = page.locator("form[action='/admin/issues']")
    await create.get_by_label("Subject").fill("Pro news")
    await create.get_by_label("Default").uncheck()
    await create.get_by_label("Weekly").check()
    await create.get_by_label("Content").fill("Hello, **pro** readers.")
    await create.get_by_role("button", name="Create draft").click()
    await expect(page).to_have_url(re.compile(r"/admin/issues/\d+$"))
    issue_url = page.url
    await page.get_by_label("Only people who match").select_option(label=f"Pro, this month: {FIXED}")
    await page.get_by_role("button", name="Save draft").click()
    await expect(page.get_by_label("Only people who match")).to_have_value(re.compile(r"\d+"))
    await page.get_by_label("Now").check()
    await page.get_by_role("button", name="Send", exact=True).click()
    await expect(page).to_have_url(issue_url)
    await expect(page.get_by_text("only those who match")).to_be_visible()
    await snap(page, "42-issue-to-segment")

    expected = sorted(email for email, (_, _, member) in PEOPLE.items() if member)
    for _ in range(300):
        if len(smtp.received) >= len(expected):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)  # nothing more comes
    assert sorted(r for message in smtp.received for r in message.recipients) == expected
    assert not watched.problems, watched.problems
