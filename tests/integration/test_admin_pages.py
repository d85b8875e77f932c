"""The admin pages as an operator uses them, without JavaScript: lists, subscribers, issues, and the rest."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.admin import AdminBrowser, create_admin, signed_in
from tests.harness import TestApp, add_confirmed

pytestmark = pytest.mark.asyncio

SCRIPT_NAME = "<script>alert('pwned')</script>"
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


@pytest.fixture
async def browser(app: TestApp) -> AsyncIterator[AdminBrowser]:
    await create_admin(app)
    async with await signed_in(app) as signed:
        yield signed


async def _subscriber_id(app: TestApp, email: str) -> int:
    found: int = await app.pool.fetchval("SELECT id FROM subscribers WHERE email = $1", email)
    return found


async def _draft(browser: AdminBrowser, subject: str, markdown: str, lists: list[str] | None = None) -> int:
    response = await browser.post(
        "/admin/issues", {"subject": subject, "markdown": markdown, "lists": lists or ["default"]}
    )
    assert response.status_code == 303, response.text
    match = re.fullmatch(r"/admin/issues/(\d+)", response.headers["location"])
    assert match is not None
    return int(match[1])


def _pre(page: str, name: str) -> str:
    found = re.search(rf'<pre data-preview="{name}">(.*?)</pre>', page, re.DOTALL)
    assert found is not None
    return html.unescape(found[1])


async def test_every_page_works_under_a_policy_that_forbids_inline_scripts(
    app: TestApp, browser: AdminBrowser
) -> None:
    await add_confirmed(app.pool, 3)
    issue_id = await _draft(browser, "Policy", "Hello")
    person = await _subscriber_id(app, "reader0@example.com")
    pages = [
        "/admin",
        "/admin/lists",
        "/admin/lists/1",
        "/admin/subscribers",
        f"/admin/subscribers/{person}",
        "/admin/issues",
        f"/admin/issues/{issue_id}",
        f"/admin/issues/{issue_id}/deliveries",
        "/admin/suppressions",
        "/admin/settings",
        "/admin/import",
        "/admin/tokens",
        "/admin/password",
        "/admin/webhooks",
        "/admin/events",
        "/admin/sequences",
        "/admin/login",
    ]
    for path in pages:
        response = await browser.get(path)
        if path == "/admin/login":
            assert response.status_code == 303  # signed in already
            continue
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy, path
        assert "unsafe-inline" not in policy, path
        assert response.headers["x-frame-options"] == "DENY", path
        assert response.headers["cache-control"] == "no-store", path
        assert not INLINE_SCRIPT.search(response.text), path
        assert 'style="' not in response.text, path
    frame = await browser.get(f"/admin/issues/{issue_id}/preview.html")
    assert "sandbox" in frame.headers["content-security-policy"]
    assert "script-src" not in frame.headers["content-security-policy"]
    assert frame.headers["x-frame-options"] == "SAMEORIGIN"


async def test_a_name_holding_a_script_is_shown_escaped_everywhere(
    app: TestApp, browser: AdminBrowser
) -> None:
    await app.pool.execute("INSERT INTO lists (slug, name, description) VALUES ('evil', $1, $1)", SCRIPT_NAME)
    await app.pool.execute(
        """WITH person AS (
               INSERT INTO subscribers (email, name) VALUES ('mallory@example.com', $1) RETURNING id
           )
           INSERT INTO subscriptions (subscriber_id, list_id, status, confirmed_at, source, signup_user_agent)
           SELECT person.id, lists.id, 'confirmed', now(), 'form', $1 FROM person, lists""",
        SCRIPT_NAME,
    )
    await app.pool.execute(
        "INSERT INTO suppressions (email, reason, detail) VALUES ('x@example.com', 'manual', $1)", SCRIPT_NAME
    )
    person = await _subscriber_id(app, "mallory@example.com")
    issue_id = await _draft(browser, SCRIPT_NAME, f"# {SCRIPT_NAME}\n\n{SCRIPT_NAME}", ["evil"])

    pages = [
        "/admin",
        "/admin/lists",
        "/admin/lists/2",
        "/admin/subscribers",
        "/admin/subscribers?q=mallory",
        f"/admin/subscribers/{person}",
        "/admin/issues",
        f"/admin/issues/{issue_id}",
        "/admin/suppressions",
        "/admin/import",
    ]
    for path in pages:
        page = (await browser.get(path)).text
        assert SCRIPT_NAME not in page, path
        assert "&lt;script&gt;" in page, path
    frame = (await browser.get(f"/admin/issues/{issue_id}/preview.html")).text
    assert SCRIPT_NAME not in frame


async def test_lists_are_created_and_edited(app: TestApp, browser: AdminBrowser) -> None:
    created = await browser.post(
        "/admin/lists", {"slug": "weekly", "name": "Weekly news", "description": "Fridays", "optin": "single"}
    )
    assert created.status_code == 303
    page = await browser.follow(created)
    assert "The list Weekly news is created." in page.text
    list_id = await app.pool.fetchval("SELECT id FROM lists WHERE slug = 'weekly'")

    edited = await browser.post(
        f"/admin/lists/{list_id}", {"name": "Weekly", "description": "", "optin": "double"}
    )
    duplicate = await browser.post("/admin/lists", {"slug": "weekly", "name": "Again"})
    bad_slug = await browser.post("/admin/lists", {"slug": "Not a slug!", "name": "Bad"})

    assert edited.status_code == 303
    row = await app.pool.fetchrow("SELECT name, description, optin FROM lists WHERE id = $1", list_id)
    assert dict(row) == {"name": "Weekly", "description": "", "optin": "double"}
    assert duplicate.status_code == bad_slug.status_code == 422
    assert "exists already" in duplicate.text
    assert "lowercase letters" in bad_slug.text
    assert await app.pool.fetchval("SELECT count(*) FROM lists") == 2


async def test_subscribers_are_searched_filtered_and_paged_by_keyset(
    app: TestApp, browser: AdminBrowser
) -> None:
    await add_confirmed(app.pool, 120)
    await add_confirmed(app.pool, 3, prefix="zed")
    await app.block("zed1@example.com")

    first = await browser.get("/admin/subscribers")
    emails = re.findall(r"/admin/subscribers/\d+\">([a-z0-9]+@example\.com)</a>", first.text)
    assert len(emails) == 50 and emails[0] == "reader0@example.com"
    next_link = re.search(r'rel="next" href="([^"]+)"', first.text)
    assert next_link is not None
    second = await browser.client.get(html.unescape(next_link[1]))
    second_emails = re.findall(r"/admin/subscribers/\d+\">([a-z0-9]+@example\.com)</a>", second.text)
    assert second_emails[0] == "reader50@example.com" and not set(emails) & set(second_emails)

    search = await browser.get("/admin/subscribers", q="ZED")
    assert re.findall(r"/admin/subscribers/\d+\">([a-z0-9]+@example\.com)</a>", search.text) == [
        f"zed{n}@example.com" for n in range(3)
    ]
    blocked = await browser.get("/admin/subscribers", status="blocklisted")
    assert re.findall(r"/admin/subscribers/\d+\">([a-z0-9]+@example\.com)</a>", blocked.text) == [
        "zed1@example.com"
    ]
    nobody = await browser.get("/admin/subscribers", list="default", status="pending")
    assert "Nobody matches." in nobody.text


async def test_a_subscriber_page_shows_consent_and_deliveries_and_its_actions_work(
    app: TestApp, browser: AdminBrowser
) -> None:
    response = await app.client.post(
        "/subscriptions",
        json={"email": "ada@example.com", "name": "Ada"},
        headers={"user-agent": "Consent/1.0"},
    )
    assert response.status_code == 202
    await app.dispatch_all_pending()
    await app.confirm(app.confirmation_links("ada@example.com")[0])
    person = await _subscriber_id(app, "ada@example.com")

    page = await browser.get(f"/admin/subscribers/{person}")
    assert "Ada" in page.text and "127.0.0.1" in page.text and "Consent/1.0" in page.text
    assert "confirmation" in page.text  # the confirmation email in the ledger

    exported = await browser.get(f"/admin/subscribers/{person}/export")
    assert exported.headers["content-disposition"].startswith("attachment")
    assert json.loads(exported.text)["subscriber"]["email"] == "ada@example.com"

    assert (await browser.post(f"/admin/subscribers/{person}/unsubscribe")).status_code == 303
    assert await app.subscription_status("ada@example.com") == "unsubscribed"
    # As their own "unsubscribe from every list": no import into another list brings them back.
    assert await app.pool.fetchval("SELECT reason FROM suppressions WHERE email = 'ada@example.com'") == (
        "unsubscribe_all"
    )
    assert (await browser.post(f"/admin/subscribers/{person}/blocklist")).status_code == 303
    assert await app.pool.fetchval("SELECT status FROM subscribers WHERE id = $1", person) == "blocklisted"

    unconfirmed = await browser.post(f"/admin/subscribers/{person}/delete")
    assert "Tick the box" in (await browser.follow(unconfirmed)).text
    assert await app.pool.fetchval("SELECT count(*) FROM subscribers WHERE id = $1", person) == 1
    erased = await browser.post(f"/admin/subscribers/{person}/delete", {"confirm": "yes"})
    assert erased.status_code == 303
    assert await app.pool.fetchval("SELECT count(*) FROM subscribers WHERE id = $1", person) == 0
    assert (await browser.get(f"/admin/subscribers/{person}")).status_code == 404


async def test_the_preview_is_exactly_what_is_sent(app: TestApp, browser: AdminBrowser) -> None:
    await add_confirmed(app.pool, 1)
    markdown = (
        "# Big news\n\nA *fine* [link](https://example.com/?a=1&b=2).\n\n"
        "> quoted\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    issue_id = await _draft(browser, "Preview me", markdown)
    frame = await browser.get(f"/admin/issues/{issue_id}/preview.html")
    page = await browser.get(f"/admin/issues/{issue_id}")
    preview_text = _pre(page.text, "text")
    live = await browser.post("/admin/preview.json", {"subject": "Preview me", "markdown": markdown})
    live_frame = await browser.post("/admin/preview.html", {"subject": "Preview me", "markdown": markdown})

    sent = await browser.post(f"/admin/issues/{issue_id}/send", {"when": "now"})
    assert sent.status_code == 303
    await app.dispatch_all_pending()

    [received] = app.smtp.to("reader0@example.com")
    # The person's own links (unsubscribe, preferences) lead nowhere in a preview.
    own_links = re.compile(r"/(unsubscribe|preferences)/[A-Za-z0-9_-]+")
    assert received.message["Subject"] == "Preview me"
    assert own_links.sub(r"/\1/X", received.body("html")) == own_links.sub(r"/\1/X", frame.text)
    assert own_links.sub(r"/\1/X", received.body("plain")) == own_links.sub(r"/\1/X", preview_text)
    assert live.json()["text"] == preview_text
    assert live_frame.text == frame.text
    # The layout's CSS travels inline, as mail clients need it.
    assert '<h1 style="' in frame.text and "<style" not in frame.text


async def test_an_issue_from_draft_to_sent_with_a_failure_retried(
    app: TestApp, browser: AdminBrowser
) -> None:
    await add_confirmed(app.pool, 5)
    app.smtp.handler.rejected["reader3@example.com"] = "550 5.1.1 reader3: no such mailbox"
    issue_id = await _draft(browser, "Monthly", "Hello **readers**")

    saved = await browser.post(
        f"/admin/issues/{issue_id}",
        {"subject": "Monthly #1", "markdown": "Hello *everyone*", "lists": ["default"], "action": "preview"},
    )
    assert saved.headers["location"] == f"/admin/issues/{issue_id}#preview"
    page = await browser.get(f"/admin/issues/{issue_id}")
    assert "Hello *everyone*" in _pre(page.text, "text")

    tested = await browser.post(f"/admin/issues/{issue_id}/test", {"addresses": "editor@example.com"})
    assert "test copy is on its way" in (await browser.follow(tested)).text
    await app.dispatch_all_pending()
    assert app.smtp.to("editor@example.com")

    await browser.post(f"/admin/issues/{issue_id}/send", {"when": "now"})
    progress = (await browser.get(f"/admin/issues/{issue_id}/progress.json")).json()
    assert progress["status"] == "sending" and progress["counts"]["total"] == 5
    paused = await browser.post(f"/admin/issues/{issue_id}/pause")
    assert "Paused." in (await browser.follow(paused)).text
    await browser.post(f"/admin/issues/{issue_id}/resume")
    await app.dispatch_all_pending()

    progress = (await browser.get(f"/admin/issues/{issue_id}/progress.json")).json()
    assert progress == {
        "status": "sent",
        "progress": 100,
        "counts": {"total": 5, "pending": 0, "sent": 4, "failed": 1, "suppressed": 0, "cancelled": 0},
    }
    ledger = await browser.get(f"/admin/issues/{issue_id}/deliveries", status="failed")
    assert "reader3@example.com" in ledger.text and "no such mailbox" in ledger.text
    assert "reader0@example.com" not in ledger.text

    # The refusal put the address on the suppression list; the operator checks, lifts it and retries.
    del app.smtp.handler.rejected["reader3@example.com"]
    assert (
        await browser.post("/admin/suppressions/remove", {"email": "reader3@example.com"})
    ).status_code == 303
    retried = await browser.post(f"/admin/issues/{issue_id}/retry-failed")
    assert "1 failed delivery queued again." in (await browser.follow(retried)).text
    await app.dispatch_all_pending()
    progress = (await browser.get(f"/admin/issues/{issue_id}/progress.json")).json()
    assert progress["counts"]["sent"] == 5 and progress["status"] == "sent"
    assert len(app.smtp.to("reader3@example.com")) == 1


async def test_scheduling_and_cancelling(app: TestApp, browser: AdminBrowser) -> None:
    issue_id = await _draft(browser, "Later", "Soon")
    scheduled = await browser.post(
        f"/admin/issues/{issue_id}/send", {"when": "later", "send_at": "2099-01-02T09:30"}
    )
    assert "Scheduled for 2099-01-02 09:30 UTC." in (await browser.follow(scheduled)).text
    assert await app.pool.fetchval("SELECT status FROM issues WHERE id = $1", issue_id) == "scheduled"
    bad = await browser.post(f"/admin/issues/{issue_id}/send", {"when": "later", "send_at": "tomorrow"})
    assert "not a date" in (await browser.follow(bad)).text
    await browser.post(f"/admin/issues/{issue_id}/cancel")
    assert await app.pool.fetchval("SELECT status FROM issues WHERE id = $1", issue_id) == "cancelled"
    again = await browser.post(f"/admin/issues/{issue_id}/pause")
    assert "cannot be paused" in (await browser.follow(again)).text


async def test_the_dashboard_shows_lists_growth_and_issue_progress(
    app: TestApp, browser: AdminBrowser
) -> None:
    await add_confirmed(app.pool, 7)
    issue_id = await _draft(browser, "Dashboard issue", "Hi")
    await browser.post(f"/admin/issues/{issue_id}/send", {"when": "now"})
    await app.dispatch_all_pending()

    page = (await browser.get("/admin")).text
    assert re.search(r"Newsletter</a>.*?<td class=\"num\">7</td>", page, re.DOTALL)
    assert "7 new subscribers since" in page
    assert "Dashboard issue" in page and 'value="100"' in page


async def test_suppressions_are_added_and_removed(app: TestApp, browser: AdminBrowser) -> None:
    added = await browser.post("/admin/suppressions", {"email": "Spam.Trap@Example.com", "detail": "a trap"})
    assert added.status_code == 303
    page = await browser.get("/admin/suppressions", q="trap")
    assert "a trap" in page.text
    invalid = await browser.post("/admin/suppressions", {"email": "not an address"})
    assert invalid.status_code == 422
    removed = await browser.post("/admin/suppressions/remove", {"email": "spam.trap@example.com"})
    assert "may be mailed again" in (await browser.follow(removed)).text
    assert await app.pool.fetchval("SELECT count(*) FROM suppressions") == 0


async def test_settings_show_the_configuration_with_secrets_hidden(
    app: TestApp, browser: AdminBrowser
) -> None:
    page = await browser.get("/admin/settings")
    assert page.status_code == 200
    assert "worker_batch_size" in page.text
    assert app.settings.resolved_secret_key() not in page.text
    # The database the service uses is named (a server given by DATABASE_URL, or the embedded one).
    database = urlsplit(app.settings.database_url.get_secret_value()).path.lstrip("/")
    assert f"/{database}" in page.text


async def test_a_csv_import_reports_its_rejected_rows_and_the_export_downloads(
    app: TestApp, browser: AdminBrowser
) -> None:
    rows = [
        "email,name",
        *(f"person{n}@example.com,Person {n}" for n in range(20)),
        "not-an-email,Broken",
        ",Empty",
    ]
    csv = ("\n".join(rows) + "\n").encode()
    token = await browser.csrf()
    imported = await browser.client.post(
        "/admin/import",
        data={"csrf_token": token, "list": "default"},
        files={"file": ("people.csv", csv, "text/csv")},
    )
    assert imported.status_code == 200, imported.text
    assert "new subscribers: <strong>20</strong>" in imported.text
    assert "not-an-email" in imported.text
    assert re.search(r'<td class="num">22</td>', imported.text)  # line of the bad address

    exported = await browser.get("/admin/export", list="default")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.text.count("@example.com") == 20
    unknown = await browser.get("/admin/export", list="nope")
    assert unknown.status_code == 303


async def test_the_import_page_takes_files_larger_than_a_form(app: TestApp, browser: AdminBrowser) -> None:
    """Forms are limited to 64 KB; the import page's upload has the import's own limit, as the API's has."""
    csv = b"email,name\n" + b"".join(f"reader{n}@example.com,Reader {n}\n".encode() for n in range(3000))
    assert len(csv) > 64 * 1024

    imported = await browser.client.post(
        "/admin/import",
        data={"csrf_token": await browser.csrf(), "list": "default"},
        files={"file": ("people.csv", csv, "text/csv")},
    )

    assert imported.status_code == 200, imported.text[:300]
    assert "new subscribers: <strong>3000</strong>" in imported.text
    assert await app.pool.fetchval("SELECT count(*) FROM subscribers") == 3000


async def test_an_export_named_with_a_control_character_downloads_and_keeps_no_connection(
    app: TestApp, browser: AdminBrowser
) -> None:
    """The list as the parser normalizes it names the file, not the raw parameter (a header cannot hold a
    CR); the connection of each download goes back to the pool."""
    await add_confirmed(app.pool, 2)
    for _ in range(app.settings.pool_max_size + 2):
        exported = await browser.get("/admin/export", list="default\r")
        assert exported.status_code == 200
        assert exported.text.count("@example.com") == 2
        assert re.fullmatch(
            r'attachment; filename="subscribers-default-\d{8}-\d{6}\.csv"',
            exported.headers["content-disposition"],
        )
    async with app.pool.acquire(timeout=3):
        pass


async def test_an_import_that_keeps_racing_sign_ups_says_so_on_the_page(
    app: TestApp, browser: AdminBrowser, database_url: str
) -> None:
    """Two sign-ups of the file's addresses commit while the import waits for each: after its second
    attempt the page asks to try again (409), as the API does."""
    token = await browser.csrf()
    signing_up = [await asyncpg.connect(database_url) for _ in range(2)]
    watching = await asyncpg.connect(database_url)

    async def import_waits_for(sign_up: asyncpg.Connection) -> None:
        """Until a session (the import's) waits for this sign-up's lock: not for another one's."""
        for _ in range(200):
            if await watching.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                sign_up.get_server_pid(),
            ):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the import never waited for the sign-up")

    try:
        for conn, address in zip(signing_up, ("ada@example.com", "grace@example.com"), strict=True):
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO subscribers (email) VALUES ($1)", address)
        upload = asyncio.ensure_future(
            browser.client.post(
                "/admin/import",
                data={"csrf_token": token, "list": "default"},
                files={"file": ("people.csv", b"email\nada@example.com\ngrace@example.com\n", "text/csv")},
            )
        )
        for conn in signing_up:
            await import_waits_for(conn)
            await conn.execute("COMMIT")
        answer = await upload
    finally:
        for conn in (*signing_up, watching):
            await conn.close()

    assert answer.status_code == 409
    assert "signed up while it was imported; try again" in answer.text
    assert answer.headers["content-type"].startswith("text/html")
