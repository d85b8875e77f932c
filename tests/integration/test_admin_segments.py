"""The segment pages as an operator uses them: a segment written with a mistake is refused with its column,
fixed, counted, chosen for an issue that is then sent to exactly its people; the live count's answers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from markupsafe import escape

from tests.admin import AdminBrowser, create_admin, signed_in
from tests.harness import TestApp

pytestmark = pytest.mark.asyncio

TYPO = 'attributes.plan = "pro" and confirmd_at > 30d'
FIXED = 'attributes.plan = "pro" and confirmed_at > 30d'


@pytest.fixture
async def browser(app: TestApp) -> AsyncIterator[AdminBrowser]:
    await create_admin(app)
    async with await signed_in(app) as signed:
        yield signed


async def _people(app: TestApp) -> None:
    await app.add_list("weekly")
    for email, plan in (("ana@example.com", "pro"), ("bea@example.com", "free"), ("cid@example.com", "pro")):
        await app.add_subscriber(email, lists=["weekly"])
        await app.pool.execute(
            "UPDATE subscribers SET attributes = jsonb_build_object('plan', $2::text) WHERE email = $1",
            email,
            plan,
        )
    # Confirmed on weekly long ago: not "confirmed_at > 30d".
    await app.pool.execute(
        "UPDATE subscriptions SET confirmed_at = now() - interval '90 days' FROM subscribers "
        "WHERE subscribers.id = subscriptions.subscriber_id AND subscribers.email = 'cid@example.com'"
    )


async def test_a_segment_from_typo_to_send(app: TestApp, browser: AdminBrowser) -> None:
    await _people(app)

    refused = await browser.post("/admin/segments", {"name": "Pro, this month", "expression": TYPO})
    assert refused.status_code == 422
    assert "at column 29: unknown field &#39;confirmd_at&#39;" in refused.text
    assert str(escape(TYPO)) in refused.text, "what was typed is shown again"

    counted = await browser.post("/admin/segments/count.json", {"expression": TYPO})
    assert counted.status_code == 422 and counted.json()["position"] == 28
    counted = await browser.post("/admin/segments/count.json", {"expression": FIXED})
    assert counted.json() == {"count": 1, "estimated": False}

    saved = await browser.post("/admin/segments", {"name": "Pro, this month", "expression": FIXED})
    assert saved.status_code == 303, saved.text
    page = await browser.follow(saved)
    assert "1 active people match" in page.text
    segment_id = int(re.fullmatch(r"/admin/segments/(\d+)", saved.headers["location"])[1])  # type: ignore[index]

    draft = await browser.post(
        "/admin/issues", {"subject": "Pro news", "markdown": "Hello.", "lists": "weekly"}
    )
    issue_url = draft.headers["location"]
    assert f'<option value="{segment_id}">Pro, this month' in (await browser.get(issue_url)).text
    saved_issue = await browser.post(
        issue_url,
        {
            "subject": "Pro news",
            "markdown": "Hello.",
            "lists": "weekly",
            "segment": str(segment_id),
            "action": "save",
        },
    )
    assert saved_issue.status_code == 303
    assert f'<option value="{segment_id}" selected>' in (await browser.get(issue_url)).text
    assert (await browser.post(f"{issue_url}/send", {})).status_code == 303
    await app.dispatch_all_pending()

    assert [r for email in app.smtp.received for r in email.recipients] == ["ana@example.com"]
    assert "only those who match <code>" in (await browser.get(issue_url)).text


async def test_a_segment_in_use_is_kept_and_can_be_renamed(app: TestApp, browser: AdminBrowser) -> None:
    saved = await browser.post("/admin/segments", {"name": "All", "expression": 'email contains "@"'})
    segment_url = saved.headers["location"]
    draft = await browser.post("/admin/issues", {"subject": "x", "markdown": "x", "lists": "default"})
    await browser.post(
        draft.headers["location"],
        {"subject": "x", "markdown": "x", "lists": "default", "segment": segment_url.rsplit("/", 1)[1]},
    )
    refused = await browser.follow(await browser.post(f"{segment_url}/delete", {}))
    assert "is to be sent to this segment" in refused.text
    renamed = await browser.post(segment_url, {"name": "Everyone", "expression": 'email contains "@"'})
    assert renamed.status_code == 303
    assert "Everyone" in (await browser.get("/admin/segments")).text
