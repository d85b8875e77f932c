"""The sign-up funnel: sign-ups, confirmations and the confirmation rate per list, made through the real app
and read on the dashboard and in /metrics."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from newsletter.domain.vocabulary import OptIn
from newsletter.services.audience import lists
from tests.admin import AdminBrowser, create_admin, signed_in
from tests.harness import TestApp, admin_client

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def browser(app: TestApp) -> AsyncIterator[AdminBrowser]:
    await create_admin(app)
    async with await signed_in(app) as signed:
        yield signed


def funnel_row(page: str, slug: str) -> list[str] | None:
    """The numbers of a list's row in the dashboard's funnel: sign-ups, confirmations, rate."""
    found = re.search(rf'<tr data-list="{slug}">(.*?)</tr>', page, re.DOTALL)
    if found is None:
        return None
    return re.findall(r'<td class="num">([^<]*)</td>', found[1])


async def counters(app: TestApp, slug: str) -> tuple[float, float]:
    return (
        await app.metric("newsletter_signups_total", list=slug),
        await app.metric("newsletter_confirmations_total", list=slug),
    )


async def sign_up_and_confirm(app: TestApp, slug: str, signups: int, confirmed: int) -> None:
    for n in range(signups):
        response = await app.subscribe(f"{slug}{n}@example.com", list=slug)
        assert response.status_code == 202
    await app.dispatch_all_pending()
    for n in range(confirmed):
        [link] = app.confirmation_links(f"{slug}{n}@example.com")
        assert (await app.confirm(link)).status_code == 200


async def test_sign_ups_and_confirmations_show_per_list_on_the_dashboard_and_in_metrics(
    app: TestApp, browser: AdminBrowser
) -> None:
    await app.add_list("weekly")
    await app.add_list("daily", optin=OptIn.SINGLE)
    before = {slug: await counters(app, slug) for slug in ("weekly", "daily", "default")}

    await sign_up_and_confirm(app, "weekly", signups=3, confirmed=2)
    form = await app.subscribe_form("weekly3@example.com", list="weekly")
    again = await app.subscribe("weekly0@example.com", list="weekly")  # a second ask is not a sign-up
    for n in range(2):  # single opt-in: confirmed at once
        assert (await app.subscribe(f"daily{n}@example.com", list="daily")).status_code == 202
    # People imported by the operator are not sign-ups.
    admin = await admin_client(app)
    imported = await app.client.post(
        "/api/v1/subscribers/import",
        params={"list": "weekly"},
        content=b"email,name\nin1@example.com,In\nin2@example.com,In\n",
        headers={**admin.headers, "Content-Type": "text/csv"},
    )
    page = (await browser.get("/admin")).text

    assert (form.status_code, again.status_code, imported.status_code) == (202, 202, 200)
    assert funnel_row(page, "weekly") == ["4", "2", "50%"]
    assert funnel_row(page, "daily") == ["2", "2", "100%"]
    assert funnel_row(page, "default") is None  # nothing happened there
    assert "Sign-ups and confirmations, last 30 days" in page
    today = datetime.now(UTC).date()
    assert f"<title>{today}: 4 sign-ups, 2 confirmations</title>" in page
    after = {slug: await counters(app, slug) for slug in ("weekly", "daily", "default")}
    deltas = {slug: (after[slug][0] - before[slug][0], after[slug][1] - before[slug][1]) for slug in after}
    assert deltas == {"weekly": (4, 2), "daily": (2, 2), "default": (0, 0)}


async def test_a_past_day_is_counted_once_and_kept(app: TestApp, browser: AdminBrowser) -> None:
    weekly = await app.add_list("weekly")
    await sign_up_and_confirm(app, "weekly", signups=3, confirmed=1)
    # These sign-ups happened five days ago.
    await app.pool.execute(
        "UPDATE subscriptions SET created_at = created_at - interval '5 days',"
        " confirmed_at = confirmed_at - interval '5 days'"
    )
    day = datetime.now(UTC).date() - timedelta(days=5)

    first = (await browser.get("/admin")).text
    await app.pool.execute("DELETE FROM subscribers")  # erased since: what happened stays counted
    second = (await browser.get("/admin")).text

    for page in (first, second):
        assert funnel_row(page, "weekly") == ["3", "1", "33%"]
        assert f"<title>{day}: 3 sign-ups, 1 confirmations</title>" in page
    kept = await app.pool.fetchval("SELECT counts FROM funnel_per_day WHERE day = $1", day)
    assert kept == {str(weekly): [3, 1]}


async def test_a_day_beyond_the_budget_is_estimated_from_a_sample_and_says_so(
    app: TestApp, browser: AdminBrowser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond the budget, today is estimated from a sample of the table's pages (a small table, as here, is
    read whole): the figures are marked as estimates."""
    await app.add_list("weekly")
    await sign_up_and_confirm(app, "weekly", signups=4, confirmed=1)
    monkeypatch.setattr(lists, "EXACT_COUNT_BUDGET", 2)
    await app.pool.execute("ANALYZE subscriptions")

    page = (await browser.get("/admin")).text

    assert funnel_row(page, "weekly") == ["≈ 4", "≈ 1", "25%"]
    assert f"<title>{datetime.now(UTC).date()}: ≈ 4 sign-ups, 1 confirmations</title>" in page
