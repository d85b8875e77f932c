"""The sequence pages in a real browser (Chromium driven by Playwright), against `newsletter serve` and
`newsletter worker` as an operator runs them; the service and the browser are those of
test_admin_in_a_browser.

The story: an operator writes a welcome sequence of two steps while the live preview follows, is refused a
delay of a hundred thousand days with what they typed kept, a person signs up and confirms, the worker sends
the welcome within seconds, and the sequence page shows it in its counts and its members; the operator pauses
and resumes it. A screenshot of every page is saved in tests/screenshots/.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.browser import test_admin_in_a_browser as story
from tests.browser.test_admin_in_a_browser import Watched, log_in, snap
from tests.harness import SMTPServer

pytestmark = pytest.mark.asyncio

# The browser story's fixtures: the service's processes, Chromium, and a page that records what goes wrong.
service, chromium, watched, page = story.service, story.chromium, story.watched, story.page

READER = "ada@example.com"
WELCOME = "Welcome to the newsletter"
MARKDOWN = """# Welcome

Hello **there**, here is [what to read first](https://example.com/start?from=welcome&step=1).
"""


async def add_step(page: Page, delay: str, unit: str, subject: str, markdown: str) -> None:
    form = page.locator("form#compose")
    await form.get_by_label("Send it").fill(delay)
    await form.get_by_label("Unit").select_option(unit)
    await form.get_by_label("Subject").fill(subject)
    await form.get_by_label("Content").fill(markdown)


async def sign_up_and_confirm(service: str, smtp: SMTPServer) -> None:
    """A reader subscribes and follows the link of the confirmation the worker process sends."""
    async with httpx.AsyncClient(base_url=service, timeout=10) as client:
        assert (await client.post("/subscriptions", json={"email": READER})).status_code == 202
        for _ in range(300):
            links = [
                link for message in smtp.to(READER) for link in message.links("plain") if "confirm" in link
            ]
            if links:
                break
            await asyncio.sleep(0.1)
        token = urlsplit(links[0]).query.removeprefix("token=")
        assert (await client.post("/subscriptions/confirm", data={"token": token})).status_code == 200


async def test_an_operator_writes_a_welcome_sequence_that_a_new_reader_receives_in_a_browser(
    page: Page, watched: Watched, service: str, smtp: SMTPServer
) -> None:
    await log_in(page)
    await page.get_by_role("navigation", name="Sections").get_by_role("link", name="Sequences").click()
    await expect(page.get_by_role("heading", name="Sequences", level=1)).to_be_visible()
    create = page.locator("form[action='/admin/sequences']")
    await create.get_by_label("Name").fill("Welcome")
    await create.get_by_label("List").select_option("default")
    await create.get_by_role("button", name="Create sequence").click()
    await expect(page).to_have_url(re.compile(r"/admin/sequences/\d+$"))
    await expect(page.get_by_role("status")).to_have_text(
        "The sequence Welcome is created: add its first step."
    )
    sequence_url = page.url
    await snap(page, "20-sequence-created")

    await page.get_by_role("link", name="Add a step").click()
    await expect(page.get_by_role("heading", name="New step", level=1)).to_be_visible()
    await add_step(page, "0", "days", WELCOME, MARKDOWN)
    # Nothing is saved: the preview follows what is typed, as a member of the list receives it.
    frame = page.frame_locator("iframe[name='preview-frame']")
    await expect(frame.locator("h1")).to_have_text("Welcome")
    await expect(frame.locator("strong")).to_have_text("there")
    link = frame.get_by_role("link", name="what to read first")
    await expect(link).to_have_attribute("href", "https://example.com/start?from=welcome&step=1")
    await expect(frame.get_by_role("link", name=re.compile("unsubscribe", re.IGNORECASE))).to_be_visible()
    await expect(page.locator("[data-preview='subject']")).to_have_text(WELCOME)
    await expect(page.locator("[data-preview='text']")).to_contain_text("/unsubscribe/preview")
    await page.locator("#preview").scroll_into_view_if_needed()
    await snap(page, "21-step-live-preview", whole=False)
    await page.get_by_role("button", name="Add step").click()
    await expect(page).to_have_url(f"{sequence_url}#steps")
    await expect(page.get_by_role("status")).to_have_text("Step 1 is added.")

    await page.get_by_role("link", name="Add a step").click()
    await add_step(page, "100000", "days", "Tips", "A tip a day.")
    await page.get_by_role("button", name="Add step").click()
    await expect(page.get_by_role("alert")).to_contain_text("delay: must be between 0 and")
    form = page.locator("form#compose")
    await expect(form.get_by_label("Send it")).to_have_value("100000")
    await expect(form.get_by_label("Subject")).to_have_value("Tips")
    await expect(form.get_by_label("Content")).to_have_value("A tip a day.")
    await snap(page, "22-step-refused")
    await form.get_by_label("Send it").fill("2")
    await page.get_by_role("button", name="Add step").click()
    await expect(page.get_by_role("status")).to_have_text("Step 2 is added.")

    await sign_up_and_confirm(service, smtp)
    for _ in range(300):  # the worker's housekeeping sweeps the due steps every second
        if any(message.message["Subject"] == WELCOME for message in smtp.to(READER)):
            break
        await asyncio.sleep(0.1)
    [welcome] = [message for message in smtp.to(READER) if message.message["Subject"] == WELCOME]
    assert "Hello <strong>there</strong>" in welcome.body("html")

    await page.reload()
    steps = page.locator("table.steps tbody tr")
    await expect(steps.nth(0).locator("td")).to_have_text(
        ["1", WELCOME, "at once, on entering", "0", "0", "1"]
    )
    await expect(steps.nth(1).locator("td")).to_have_text(
        ["2", "Tips", "2 days after the step before", "1", "0", "0"]
    )
    await page.get_by_label("Last step sent").select_option("1")
    await page.get_by_label("Status").select_option("active")
    await page.get_by_role("button", name="Filter").click()
    members = page.locator("table.members tbody tr")
    await expect(members).to_have_count(1)
    await expect(members.locator("td").nth(0)).to_have_text(READER)
    await expect(members.locator("td").nth(2)).to_have_text("1 of 2")
    await snap(page, "23-sequence")

    await page.get_by_role("button", name="Pause").click()
    await expect(page.get_by_role("status")).to_contain_text("Paused")
    await expect(page.get_by_role("note")).to_contain_text("steps that come due wait")
    await page.get_by_role("button", name="Resume").click()
    await expect(page.get_by_role("status")).to_contain_text("Resumed")

    await page.get_by_role("navigation", name="Sections").get_by_role("link", name="Sequences").click()
    row = page.get_by_role("row", name=re.compile("Welcome"))
    await expect(row.locator("td")).to_have_text(["Welcome", "default", "active", "2", "1", "0", "0"])
    await snap(page, "24-sequences")

    assert not watched.problems
    assert [(method, status) for method, _, status in watched.error_answers] == [("POST", 401), ("POST", 422)]
