"""What the browser test and the admin pages benchmark found, pinned down without a browser: a failed address
that a retry could not reach, and the subscribers page and dashboard at scale (each filter answered by the
query that suits it, with the same people whichever it is; counts estimated beyond a budget)."""

from __future__ import annotations

import html
import itertools
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from newsletter.db.database import Database
from newsletter.services.audience import lists, subscribers
from tests.admin import AdminBrowser, create_admin, signed_in
from tests.harness import TestApp, add_confirmed

pytestmark = pytest.mark.asyncio

REFUSAL = "550 5.1.1 reader1: no such mailbox"


@pytest.fixture
async def browser(app: TestApp) -> AsyncIterator[AdminBrowser]:
    await create_admin(app)
    async with await signed_in(app) as signed:
        yield signed


async def _sent_with_one_refusal(app: TestApp, browser: AdminBrowser) -> int:
    await add_confirmed(app.pool, 3)
    app.smtp.handler.rejected["reader1@example.com"] = REFUSAL
    created = await browser.post("/admin/issues", {"subject": "Hi", "markdown": "Hi", "lists": ["default"]})
    issue_id = int(created.headers["location"].rsplit("/", 1)[1])
    await browser.post(f"/admin/issues/{issue_id}/send", {"when": "now"})
    await app.dispatch_all_pending()
    del app.smtp.handler.rejected["reader1@example.com"]
    return issue_id


async def test_the_ledger_says_which_failed_address_is_suppressed_and_lifts_it_in_place(
    app: TestApp, browser: AdminBrowser
) -> None:
    issue_id = await _sent_with_one_refusal(app, browser)
    ledger = f"/admin/issues/{issue_id}/deliveries?status=failed"

    page = (await browser.get(ledger)).text
    issue_page = (await browser.get(f"/admin/issues/{issue_id}")).text
    lifted = await browser.post(
        "/admin/suppressions/remove", {"email": "reader1@example.com", "next": html.unescape(ledger)}
    )
    after = await browser.follow(lifted)

    assert "The address is suppressed (hard_bounce)." in page and "Lift the suppression" in page
    for shown in (page, issue_page):
        assert "1 of the failed addresses is on the suppression list" in shown
    assert lifted.headers["location"] == ledger
    assert "reader1@example.com may be mailed again." in after.text
    assert "The address is suppressed" not in after.text and "suppression list" not in after.text
    assert await app.pool.fetchval("SELECT count(*) FROM suppressions") == 0


async def test_a_retry_that_cannot_reach_a_suppressed_address_says_so(
    app: TestApp, browser: AdminBrowser
) -> None:
    issue_id = await _sent_with_one_refusal(app, browser)
    retried = await browser.post(f"/admin/issues/{issue_id}/retry-failed")
    page = await browser.follow(retried)
    assert "1 failed delivery queued again. 1 of them goes to a suppressed address" in page.text
    assert 'class="notice error"' in page.text


async def test_lifting_a_suppression_returns_only_to_an_admin_page(browser: AdminBrowser) -> None:
    for email in ("a@example.com", "b@example.com"):
        await browser.post("/admin/suppressions", {"email": email})
    outside = await browser.post(
        "/admin/suppressions/remove", {"email": "a@example.com", "next": "https://evil.example/"}
    )
    plain = await browser.post("/admin/suppressions/remove", {"email": "b@example.com"})
    assert outside.headers["location"] == "/admin"
    assert plain.headers["location"] == "/admin/suppressions"


def _emails(page: str) -> list[str]:
    return re.findall(r'/admin/subscribers/\d+">([^<]+)</a>', page)


async def test_search_finds_beginnings_and_on_request_anything_inside(
    app: TestApp, browser: AdminBrowser
) -> None:
    await add_confirmed(app.pool, 12, prefix="zed")
    await app.pool.execute("UPDATE subscribers SET name = 'Ada Lovelace' WHERE email = 'zed3@example.com'")

    beginning = await browser.get("/admin/subscribers", q="ZED1")
    name = await browser.get("/admin/subscribers", q="ada LOVE")
    inside = await browser.get("/admin/subscribers", q="ed1")
    anywhere = await browser.get("/admin/subscribers", q="ed1", match="contains")
    wildcard = await browser.get("/admin/subscribers", q="zed_", match="contains")

    assert _emails(beginning.text) == ["zed1@example.com", "zed10@example.com", "zed11@example.com"]
    assert "Search inside them too" in beginning.text
    assert _emails(name.text) == ["zed3@example.com"]
    assert _emails(inside.text) == []
    assert _emails(anywhere.text) == _emails(beginning.text)
    assert "Only those that begin with it" in anywhere.text
    assert _emails(wildcard.text) == []  # "_" is a character, not a wildcard


PEOPLE = 90


@pytest.fixture
async def mixed(app: TestApp) -> TestApp:
    """People in two lists with every status, some blocklisted, some in both lists, some in none."""
    await app.pool.execute("INSERT INTO lists (slug, name) VALUES ('weekly', 'Weekly')")
    await app.pool.execute(
        """
        INSERT INTO subscribers (email, name, status)
        SELECT CASE WHEN n % 4 = 0 THEN 'ada' ELSE 'bob' END || n || '@example.com',
               CASE WHEN n % 3 = 0 THEN 'Ada Lovelace' ELSE 'Bob' END,
               CASE WHEN n % 7 = 0 THEN 'blocklisted' ELSE 'active' END
        FROM generate_series(1, $1) AS n;
        """,
        PEOPLE,
    )
    await app.pool.execute(
        """
        INSERT INTO subscriptions (subscriber_id, list_id, status)
        SELECT subscribers.id, lists.id,
               (ARRAY['pending', 'confirmed', 'unsubscribed'])[1 + (subscribers.id + lists.id) % 3]
        FROM subscribers, lists
        WHERE (lists.slug = 'default' AND subscribers.id % 5 <> 0)
           OR (lists.slug = 'weekly' AND subscribers.id % 2 = 0)
        """
    )
    return app


async def _expected(app: TestApp, list_id: int | None, status: str | None, search: str | None) -> list[int]:
    """The people the filters name, worked out one by one in Python."""
    people = await app.pool.fetch("SELECT id, email, name, status FROM subscribers ORDER BY id")
    memberships = await app.pool.fetch("SELECT subscriber_id, list_id, status FROM subscriptions")
    wanted = []
    for person in people:
        mine = [row for row in memberships if row["subscriber_id"] == person["id"]]
        if list_id is not None and not any(row["list_id"] == list_id for row in mine):
            continue
        if status in ("active", "blocklisted") and person["status"] != status:
            continue
        if status in ("pending", "confirmed", "unsubscribed") and not any(
            row["status"] == status and list_id in (None, row["list_id"]) for row in mine
        ):
            continue
        if search and not any(
            field.lower().startswith(search.lower()) for field in (person["email"], person["name"])
        ):
            continue
        wanted.append(person["id"])
    return wanted


@pytest.mark.parametrize("lookup_limit", [2, 1000])
async def test_every_filter_pages_through_the_same_people_by_index_or_by_walk(
    mixed: TestApp, lookup_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lookup limit of 2 sends every search and the blocklisted filter down the walk instead of the index.
    monkeypatch.setattr(subscribers, "LOOKUP_LIMIT", lookup_limit)
    weekly = await mixed.pool.fetchval("SELECT id FROM lists WHERE slug = 'weekly'")
    statuses = [None, "active", "blocklisted", "pending", "confirmed", "unsubscribed"]
    for list_id, status, search in itertools.product(
        [None, 1, weekly], statuses, [None, "ada", "bob1", "zz"]
    ):
        found: list[Any] = []
        after = None
        slug = {None: None, 1: "default", weekly: "weekly"}[list_id]
        while True:
            page = await subscribers.subscriber_page(
                Database(mixed.pool), after=after, list_slug=slug, status=status, search=search, limit=7
            )
            found += [person["id"] for person in page]
            if len(page) < 7:
                break
            after = page[-1]["id"]
        assert found == await _expected(mixed, list_id, status, search), (list_id, status, search)


async def test_counts_beyond_the_budget_are_shown_as_estimates(
    app: TestApp, browser: AdminBrowser, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add_confirmed(app.pool, 40)
    await app.pool.execute("ANALYZE subscribers, subscriptions")
    exact = (await browser.get("/admin")).text
    monkeypatch.setattr(lists, "EXACT_COUNT_BUDGET", 10)
    estimated = (await browser.get("/admin")).text
    lists_page = (await browser.get("/admin/lists")).text

    assert re.search(r'<td class="num">40</td>', exact) and "≈" not in exact
    for page in (estimated, lists_page):
        assert re.search(r'<td class="num">≈ \d+</td>', page)
        assert "estimated from PostgreSQL's statistics" in page
    assert re.search(r"≈ \d+ new subscribers since", estimated)  # today's sign-ups, estimated too


async def test_the_chart_keeps_each_past_day_it_counted(app: TestApp, browser: AdminBrowser) -> None:
    await add_confirmed(app.pool, 5)
    await app.pool.execute(
        "UPDATE subscribers SET created_at = now() - interval '5 days' WHERE email LIKE 'reader%'"
    )
    first = (await browser.get("/admin")).text
    kept = await app.pool.fetch("SELECT day, added FROM signups_per_day WHERE added > 0")
    # The count of a past day is history: read from where it was kept, not counted again.
    await app.pool.execute("DELETE FROM subscribers WHERE email = 'reader0@example.com'")
    again = (await browser.get("/admin")).text

    assert "5 new subscribers since" in first and "5 new subscribers since" in again
    assert [row["added"] for row in kept] == [5]
    assert await app.pool.fetchval("SELECT count(*) FROM signups_per_day") == 28  # not today nor yesterday
