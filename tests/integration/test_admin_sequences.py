"""The sequence pages as an operator uses them, without JavaScript: a welcome written through the forms and
sent to who confirms, its counts and members, the step editor's preview, and the buttons."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator

import pytest

from newsletter.services.automations import sequences
from newsletter.services.automations.sequences import StepContent
from newsletter.services.sending.compose import Composer
from tests.admin import AdminBrowser, create_admin, signed_in
from tests.harness import TestApp, add_confirmed

pytestmark = pytest.mark.asyncio

DAY = 86400
WELCOME = [("0", "days", "Welcome"), ("2", "days", "Tips"), ("7", "days", "A week in")]
SCRIPT_NAME = "<script>alert('pwned')</script>"
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
UNSUBSCRIBE = re.compile(r"/(unsubscribe|preferences)/[A-Za-z0-9_-]+")  # the person's own links


@pytest.fixture
async def browser(app: TestApp) -> AsyncIterator[AdminBrowser]:
    await create_admin(app)
    async with await signed_in(app) as signed:
        yield signed


async def _create(browser: AdminBrowser, name: str = "Welcome", list_slug: str = "default") -> int:
    response = await browser.post("/admin/sequences", {"name": name, "list": list_slug})
    assert response.status_code == 303, response.text
    match = re.fullmatch(r"/admin/sequences/(\d+)", response.headers["location"])
    assert match is not None
    return int(match[1])


async def _add_step(browser: AdminBrowser, sequence_id: int, delay: str, unit: str, subject: str) -> None:
    fields = {"delay": delay, "unit": unit, "subject": subject, "markdown": f"This is **{subject}**."}
    response = await browser.post(f"/admin/sequences/{sequence_id}/steps", fields)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"/admin/sequences/{sequence_id}#steps"


async def _sign_up(app: TestApp, address: str) -> None:
    await app.subscribe(address)
    await app.dispatch_all_pending()
    assert (await app.confirm(app.confirmation_links(address)[-1])).status_code == 200


def subjects(app: TestApp, address: str) -> list[str]:
    return [
        str(received.message["Subject"])
        for received in app.smtp.to(address)
        if "/subscriptions/confirm?" not in received.body("plain")
    ]


def _rows(page: str, table: str) -> list[list[str]]:
    """The text of each cell of each row of a table's body."""
    found = re.search(rf'<table class="{table}">.*?<tbody>(.*?)</tbody>', page, re.DOTALL)
    assert found is not None, f"no table {table}"
    return [
        [
            html.unescape(re.sub(r"<[^>]+>|\s+", lambda tag: " " if tag[0].isspace() else "", cell)).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)
        ]
        for row in re.findall(r"<tr>(.*?)</tr>", found[1], re.DOTALL)
    ]


def _pre(page: str, name: str) -> str:
    found = re.search(rf'<pre data-preview="{name}">(.*?)</pre>', page, re.DOTALL)
    assert found is not None
    return html.unescape(found[1])


async def test_a_welcome_written_through_the_forms_goes_to_who_confirms(
    app: TestApp, browser: AdminBrowser
) -> None:
    sequence_id = await _create(browser)
    created = await browser.get(f"/admin/sequences/{sequence_id}")
    assert "The sequence Welcome is created: add its first step." in created.text
    for delay, unit, subject in WELCOME:
        await _add_step(browser, sequence_id, delay, unit, subject)

    page = await browser.get(f"/admin/sequences/{sequence_id}")
    assert "Step 3 is added." in page.text
    assert [row[:3] for row in _rows(page.text, "steps")] == [
        ["1", "Welcome", "at once, on entering"],
        ["2", "Tips", "2 days after the step before"],
        ["3", "A week in", "7 days after the step before"],
    ]
    listed = await browser.get("/admin/sequences")
    assert _rows(listed.text, "sequences") == [["Welcome", "default", "active", "3", "0", "0", "0"]]

    await _sign_up(app, "ada@example.com")
    await app.run_sequences()
    assert subjects(app, "ada@example.com") == ["Welcome"]
    [received] = app.smtp.to("ada@example.com")[-1:]
    assert "<strong>Welcome</strong>" in received.body("html")
    assert received.message["List-Unsubscribe"].startswith(f"<{app.settings.base_url}/unsubscribe/")

    page = await browser.get(f"/admin/sequences/{sequence_id}")
    # Waiting, queued, sent: Ada was sent the welcome and waits for the tips.
    assert [row[3:] for row in _rows(page.text, "steps")] == [
        ["0", "0", "1"],
        ["1", "0", "0"],
        ["0", "0", "0"],
    ]
    assert "active: <strong>1</strong>" in page.text
    [member] = _rows(page.text, "members")
    assert member[:3] == ["ada@example.com", "active", "1 of 3"]
    assert _rows((await browser.get(f"/admin/sequences/{sequence_id}", step="1")).text, "members")[0][0] == (
        "ada@example.com"
    )
    for filters in ({"step": "0"}, {"step": "2"}, {"status": "left"}, {"step": "1", "status": "completed"}):
        filtered = await browser.get(f"/admin/sequences/{sequence_id}", **filters)
        assert _rows(filtered.text, "members") == [["Nobody matches."]], filters

    await app.pass_time(2 * DAY)
    await app.run_sequences()
    assert subjects(app, "ada@example.com") == ["Welcome", "Tips"]
    listed = await browser.get("/admin/sequences")
    assert _rows(listed.text, "sequences") == [["Welcome", "default", "active", "3", "1", "0", "0"]]


async def test_the_step_preview_is_the_email_a_member_of_the_list_receives(
    app: TestApp, browser: AdminBrowser
) -> None:
    sequence_id = await _create(browser)
    markdown = "# Hello\n\nA *fine* [link](https://example.com/?a=1&b=2).\n"
    fields = {"subject": "Welcome aboard", "markdown": markdown}
    live_frame = await browser.post(f"/admin/sequences/{sequence_id}/preview.html", fields)
    live_text = await browser.post(f"/admin/sequences/{sequence_id}/preview.json", fields)

    assert live_frame.status_code == 200
    assert "sandbox" in live_frame.headers["content-security-policy"]
    assert f'href="{app.settings.base_url}/unsubscribe/preview"' in live_frame.text
    assert "<em>fine</em>" in live_frame.text
    assert live_text.json()["subject"] == "Welcome aboard"
    assert f"{app.settings.base_url}/unsubscribe/preview" in live_text.json()["text"]
    refused = await browser.post(f"/admin/sequences/{sequence_id}/preview.json", {"subject": "a\nb"})
    assert refused.status_code == 422 and "one line" in refused.json()["error"]

    added = await browser.post(
        f"/admin/sequences/{sequence_id}/steps",
        {"delay": "0", "unit": "minutes", **fields, "action": "preview"},
    )
    match = re.fullmatch(rf"/admin/sequences/{sequence_id}/steps/(\d+)#preview", added.headers["location"])
    assert match is not None, added.headers["location"]
    step_url = f"/admin/sequences/{sequence_id}/steps/{match[1]}"
    frame = await browser.get(f"{step_url}/preview.html")
    page = await browser.get(step_url)
    assert frame.text == live_frame.text
    assert frame.headers["x-frame-options"] == "SAMEORIGIN"
    assert _pre(page.text, "text") == live_text.json()["text"]
    assert "a member of Newsletter" in page.text

    await _sign_up(app, "ada@example.com")
    await app.run_sequences()
    [received] = [r for r in app.smtp.to("ada@example.com") if r.message["Subject"] == "Welcome aboard"]
    assert UNSUBSCRIBE.sub(r"/\1/X", received.body("html")) == UNSUBSCRIBE.sub(r"/\1/X", frame.text)
    assert UNSUBSCRIBE.sub(r"/\1/X", received.body("plain")) == UNSUBSCRIBE.sub(
        r"/\1/X", _pre(page.text, "text")
    )


async def test_pause_resume_enroll_rename_and_delete_through_the_forms(
    app: TestApp, browser: AdminBrowser
) -> None:
    readers = await add_confirmed(app.pool, 3)
    await app.suppress(readers[2])
    sequence_id = await _create(browser)
    await _add_step(browser, sequence_id, "0", "days", "Welcome")
    page = f"/admin/sequences/{sequence_id}"
    assert "Newsletter has 3 confirmed people" in (await browser.get(page)).text

    unconfirmed = await browser.post(f"{page}/enroll")
    assert "Tick the box to confirm the enrollment." in (await browser.follow(unconfirmed)).text
    paused = await browser.post(f"{page}/pause")
    assert "Paused: due steps wait" in (await browser.follow(paused)).text
    enrolled = await browser.post(f"{page}/enroll", {"confirm": "yes"})
    assert "2 people entered the sequence." in (await browser.follow(enrolled)).text
    again = await browser.post(f"{page}/enroll", {"confirm": "yes"})
    assert "Nobody entered" in (await browser.follow(again)).text

    await app.run_sequences()
    assert [subjects(app, reader) for reader in readers] == [[], [], []]
    shown = (await browser.get(page)).text
    assert '<span class="status paused">paused</span>' in shown and ">Resume</button>" in shown
    assert [row[3:] for row in _rows(shown, "steps")] == [["2", "0", "0"]]

    resumed = await browser.post(f"{page}/resume")
    assert "Resumed" in (await browser.follow(resumed)).text
    await app.run_sequences()
    assert [subjects(app, reader) for reader in readers] == [["Welcome"], ["Welcome"], []]
    completed = await browser.get(page, status="completed")
    assert [row[0] for row in _rows(completed.text, "members")] == readers[:2]

    empty = await browser.post(f"{page}/rename", {"name": "  "})
    assert empty.status_code == 422 and "name:" in empty.text
    renamed = await browser.post(f"{page}/rename", {"name": "Hello"})
    assert "The sequence is renamed Hello." in (await browser.follow(renamed)).text

    kept = await browser.post(f"{page}/delete")
    assert "Tick the box to confirm the deletion." in (await browser.follow(kept)).text
    assert (await browser.get(page)).status_code == 200
    deleted = await browser.post(f"{page}/delete", {"confirm": "yes"})
    assert deleted.headers["location"] == "/admin/sequences"
    assert "The sequence Hello is deleted." in (await browser.follow(deleted)).text
    assert (await browser.get(page)).status_code == 404
    assert await app.pool.fetchval("SELECT count(*) FROM sequence_members") == 0


@pytest.mark.parametrize(
    ("delay", "unit", "subject", "message"),
    [
        ("1", "days", "", "subject: must not be empty"),
        ("1", "days", "Hi\nBcc: x@example.com", "subject: must be one line"),
        ("-1", "days", "Hi", "delay: must be between 0 and"),
        ("soon", "days", "Hi", "delay: give a whole number"),
        ("1", "weeks", "Hi", "delay: the unit is minutes, hours or days"),
        ("100000", "days", "Hi", "delay: must be between 0 and"),
    ],
)
async def test_an_invalid_step_shows_the_error_and_keeps_what_was_typed(
    app: TestApp, browser: AdminBrowser, delay: str, unit: str, subject: str, message: str
) -> None:
    sequence_id = await _create(browser)
    markdown = "Kept <b>as typed</b> & all"
    fields = {"delay": delay, "unit": unit, "subject": subject, "markdown": markdown}

    response = await browser.post(f"/admin/sequences/{sequence_id}/steps", fields)

    assert response.status_code == 422
    error = re.search(r'<p class="error" role="alert">(.*?)</p>', response.text, re.DOTALL)
    assert error is not None and message in html.unescape(error[1])
    assert f">{html.escape(markdown)}</textarea>" in response.text
    assert f'maxlength="9" required value="{html.escape(delay)}"' in response.text
    assert f'value="{html.escape(subject)}"' in response.text
    assert await app.pool.fetchval("SELECT count(*) FROM sequence_steps") == 0


async def test_a_step_is_edited_and_deleted_on_its_page(app: TestApp, browser: AdminBrowser) -> None:
    sequence_id = await app.add_sequence([(0, "Welcome"), (2 * DAY, "Tips"), (90 * 60, "Later")])
    steps = (await sequences.get_sequence(app.db, sequence_id))["steps"]
    step_url = f"/admin/sequences/{sequence_id}/steps/{steps[1]['id']}"

    page = await browser.get(step_url)
    assert 'required value="2"' in page.text and '<option value="days" selected>' in page.text
    assert "This is Tips.</textarea>" in page.text
    later = await browser.get(f"/admin/sequences/{sequence_id}/steps/{steps[2]['id']}")
    assert 'required value="90"' in later.text and '<option value="minutes" selected>' in later.text

    refused = await browser.post(step_url, {"delay": "1", "unit": "days", "subject": "", "markdown": "New"})
    assert refused.status_code == 422 and ">New</textarea>" in refused.text
    saved = await browser.post(
        step_url,
        {"delay": "1", "unit": "days", "subject": "Better tips", "markdown": "New", "action": "save"},
    )
    assert saved.headers["location"] == step_url
    assert "Step 2 is saved" in (await browser.follow(saved)).text
    step = await sequences.get_step(app.db, sequence_id, steps[1]["id"])
    assert (step["delay_seconds"], step["subject"], step["markdown"]) == (DAY, "Better tips", "New")
    overview = await browser.get(f"/admin/sequences/{sequence_id}")
    assert [row[2] for row in _rows(overview.text, "steps")] == [
        "at once, on entering",
        "1 day after the step before",
        "90 minutes after the step before",
    ]

    kept = await browser.post(f"{step_url}/delete")
    assert "Tick the box to confirm the deletion." in (await browser.follow(kept)).text
    deleted = await browser.post(f"{step_url}/delete", {"confirm": "yes"})
    assert "Step 2 is deleted." in (await browser.follow(deleted)).text
    left = (await sequences.get_sequence(app.db, sequence_id))["steps"]
    assert [(step["position"], step["subject"]) for step in left] == [(1, "Welcome"), (2, "Later")]
    assert (await browser.get(step_url)).status_code == 404


async def test_a_step_written_in_html_through_the_api_is_edited_as_html(
    app: TestApp, browser: AdminBrowser
) -> None:
    sequence_id = await app.add_sequence([])
    content = StepContent.parse(
        Composer(app.settings), delay_seconds=45, subject="Raw", markdown=None, html="<p>Hi</p>", text="Hi"
    )
    step = await sequences.add_step(app.db, sequence_id, content)
    step_url = f"/admin/sequences/{sequence_id}/steps/{step['id']}"

    page = await browser.get(step_url)
    assert "&lt;p&gt;Hi&lt;/p&gt;</textarea>" in page.text and 'name="markdown"' not in page.text
    assert '<option value="seconds" selected>' in page.text, "a delay of 45 s is kept as it is"
    saved = await browser.post(
        step_url,
        {
            "format": "html",
            "delay": "45",
            "unit": "seconds",
            "subject": "Raw!",
            "html": "<p>Ho</p>",
            "text": "Ho",
        },
    )
    assert saved.status_code == 303
    step = await sequences.get_step(app.db, sequence_id, step["id"])
    assert (step["delay_seconds"], step["markdown"], step["html"], step["text"]) == (
        45,
        None,
        "<p>Ho</p>",
        "Ho",
    )


async def test_members_are_paged_by_keyset(app: TestApp, browser: AdminBrowser) -> None:
    sequence_id = await app.add_sequence([(0, "Welcome")])
    await add_confirmed(app.pool, 60)
    await browser.post(f"/admin/sequences/{sequence_id}/enroll", {"confirm": "yes"})

    first = await browser.get(f"/admin/sequences/{sequence_id}", status="active")
    emails = [row[0] for row in _rows(first.text, "members")]
    next_link = re.search(r'rel="next" href="([^"]+)"', first.text)
    assert len(emails) == 50 and next_link is not None
    second = await browser.client.get(html.unescape(next_link[1]))
    more = [row[0] for row in _rows(second.text, "members")]

    assert len(more) == 10 and not set(emails) & set(more)
    assert sorted(emails + more) == sorted(f"reader{n}@example.com" for n in range(60))
    assert 'rel="next"' not in second.text and "First page" in second.text


async def test_the_pages_keep_the_admin_policy_and_escape_names(app: TestApp, browser: AdminBrowser) -> None:
    await app.pool.execute("INSERT INTO lists (slug, name, description) VALUES ('evil', $1, '')", SCRIPT_NAME)
    sequence_id = await _create(browser, SCRIPT_NAME, "evil")
    await _add_step(browser, sequence_id, "0", "days", SCRIPT_NAME)
    step_id = (await sequences.get_sequence(app.db, sequence_id))["steps"][0]["id"]
    await app.add_subscriber("mallory@example.com", lists=["evil"])
    await app.run_sequences()

    for path in (
        "/admin/sequences",
        f"/admin/sequences/{sequence_id}",
        f"/admin/sequences/{sequence_id}/steps/new",
        f"/admin/sequences/{sequence_id}/steps/{step_id}",
    ):
        response = await browser.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"].startswith("default-src 'none'"), path
        assert "unsafe-inline" not in response.headers["content-security-policy"], path
        assert not INLINE_SCRIPT.search(response.text), path
        assert 'style="' not in response.text, path
        assert SCRIPT_NAME not in response.text and "&lt;script&gt;" in response.text, path
        assert 'aria-current="page">Sequences</a>' in response.text, path
    frame = await browser.get(f"/admin/sequences/{sequence_id}/steps/{step_id}/preview.html")
    assert SCRIPT_NAME not in frame.text
    assert (await browser.get("/admin/sequences/999999")).status_code == 404
    assert (await browser.get(f"/admin/sequences/{sequence_id}/steps/999999")).status_code == 404
    forged = await browser.post(f"/admin/sequences/{sequence_id}/delete", {"confirm": "yes"}, csrf=False)
    assert forged.status_code == 403
