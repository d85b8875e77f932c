"""The preference page in a real browser (Chromium driven by Playwright), against `newsletter serve` and
`newsletter worker`; the service and the browser are those of test_admin_in_a_browser.

The story of issue 16: a reader opens the "manage your subscription" link of a newsletter they received,
joins a second list with one click, and then leaves everything.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from playwright.async_api import Page, expect

from newsletter.db.database import Database
from newsletter.services.sending import issues
from tests.browser import test_admin_in_a_browser as story
from tests.browser.test_admin_in_a_browser import Watched, snap
from tests.harness import SMTPServer

pytestmark = pytest.mark.asyncio

service, chromium, watched, page = story.service, story.chromium, story.watched, story.page

READER = "ada@example.com"


async def _newsletter_to_a_reader(database_url: str, smtp: SMTPServer) -> str:
    """Ada on the default list, a second public list, an issue sent by the worker; her preference link."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE lists SET visibility = 'public' WHERE slug = 'default'")
        await conn.execute(
            "INSERT INTO lists (slug, name, visibility) VALUES ('weekly', 'Weekly notes', 'public')"
        )
        await conn.execute(
            """
            WITH person AS (INSERT INTO subscribers (email, name) VALUES ($1, 'Ada') RETURNING id)
            INSERT INTO subscriptions (subscriber_id, list_id, status, confirmed_at, source)
            SELECT person.id, lists.id, 'confirmed', now(), 'test'
            FROM person, lists WHERE lists.slug = 'default'
            """,
            READER,
        )
        db = Database.on(conn)
        created = await issues.create_issue(
            db, issues.IssueContent.parse("News", "Hello.", None, None), ["default"]
        )
        await issues.send_issue(db, created["id"], None, None)
    finally:
        await conn.close()
    for _ in range(300):
        links = [
            link for message in smtp.to(READER) for link in message.links("html") if "/preferences/" in link
        ]
        if links:
            return links[0]
        await asyncio.sleep(0.1)
    raise AssertionError("the newsletter did not arrive")


async def test_a_reader_joins_a_list_and_leaves_everything_from_the_preference_link_in_a_browser(
    page: Page, watched: Watched, smtp: SMTPServer, database_url: str
) -> None:
    link = await _newsletter_to_a_reader(database_url, smtp)
    received = len(smtp.received)
    await page.goto(link)
    await expect(page.get_by_role("heading", name="Your subscription", level=1)).to_be_visible()
    await expect(page.get_by_text(READER)).to_be_visible()
    await snap(page, "50-preferences")

    await page.get_by_role("button", name="Subscribe to Weekly notes").click()
    await expect(page.get_by_role("status")).to_have_text("You are subscribed to that list.")
    await expect(page.get_by_role("button", name="Subscribe to Weekly notes")).to_have_count(0)
    await snap(page, "51-preferences-joined")

    await page.get_by_role("button", name="Unsubscribe from every list").click()
    await expect(page.get_by_role("status")).to_contain_text("You are unsubscribed from every list.")
    await expect(page.get_by_role("button", name="Subscribe to Weekly notes")).to_be_visible()
    await snap(page, "52-preferences-left")

    conn = await asyncpg.connect(database_url)
    try:
        statuses = await conn.fetch("SELECT status FROM subscriptions")
    finally:
        await conn.close()
    assert [row["status"] for row in statuses] == ["unsubscribed", "unsubscribed"]
    assert len(smtp.received) == received, "joining sent no second confirmation"
    assert not watched.problems, watched.problems
