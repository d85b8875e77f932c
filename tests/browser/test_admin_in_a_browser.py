"""The admin web interface in a real browser: Chromium driven by Playwright, against the service as an
operator runs it (`newsletter serve` and `newsletter worker` processes) and a real SMTP server in this
process.

The story: an operator is created with the CLI, logs in, creates a list, imports 1,000 people from a CSV file
with a few bad rows, writes an issue in Markdown while the live preview follows, sends it, watches the
progress reach 100 %, finds in the ledger the one address the mail server refused, and retries it until it is
delivered. Then they connect a webhook endpoint, send it a test event, watch the attempt arrive and find the
event in the record. A screenshot of every page is saved in tests/screenshots/.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from playwright.async_api import Error as PlaywrightError

from tests.acceptance.test_cli import base_env, wait_until_up
from tests.harness import SMTPHandler, SMTPServer, free_port
from tests.receiver import running_receiver

pytestmark = pytest.mark.asyncio

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"

OPERATOR = "operator@example.com"
PASSWORD = "correct horse battery staple"
PEOPLE = 1000
REFUSED = "person0417@example.com"
REFUSAL = "550 5.1.1 person0417: mailbox unavailable"
# Bad rows among the good ones: (the row, a word the reason for leaving it out must hold).
BAD_ROWS = {
    100: ("not-an-email,Broken,", "email"),
    350: (",Nobody,", "missing"),
    600: ('bad-json@example.com,Bad JSON,"{not json"', "attributes"),
    900: ("too,many,fields,here", "fields"),
}
MARKDOWN = """# Spring news

Hello **readers**, the [programme](https://example.com/programme?year=2026&lang=en) is out.

- talks on Friday
- workshops on Saturday
"""


@dataclass
class RefusesOnce(SMTPHandler):
    """A mail server that refuses each address of `refuse_once` once, the first time, then accepts it."""

    refuse_once: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        refusal = self.refuse_once.pop(address, None)
        if refusal is not None:
            return refusal
        return await super().handle_RCPT(server, session, envelope, address, options)


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    server.handler = RefusesOnce(refuse_once={REFUSED: REFUSAL})
    server.start()
    yield server
    server.stop()


@contextmanager
def process(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as output:
        started = subprocess.Popen(
            [sys.executable, "-m", "newsletter", *args], env=env, cwd=cwd, stdout=output, stderr=output
        )
    try:
        yield started
    finally:
        if started.poll() is None:
            started.terminate()
        try:
            started.wait(timeout=30)
        except subprocess.TimeoutExpired:
            started.kill()
            started.wait()


@pytest.fixture
async def service(database_url: str, smtp: SMTPServer, tmp_path: Path) -> AsyncIterator[str]:
    """`newsletter serve` and `newsletter worker`, configured as an operator would, sending to `smtp`; the
    service's address."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env(
        DATABASE_URL=database_url,
        NEWSLETTER_BASE_URL=url,
        NEWSLETTER_PORT=str(port),
        NEWSLETTER_EMAIL_URL=smtp.url,
        NEWSLETTER_SECRET_KEY="browser-test-secret-key-of-enough-length",
        # Slow enough that the progress of a send is seen moving: 1,000 emails take about five seconds.
        NEWSLETTER_SEND_RATE_PER_SECOND="200",
        NEWSLETTER_WORKER_BATCH_SIZE="50",
        NEWSLETTER_WEBHOOK_ALLOW_PRIVATE="true",  # the webhook receiver is in this process, on loopback
    )
    log = tmp_path / "service.log"
    created = subprocess.run(
        [sys.executable, "-m", "newsletter", "users", "create", "--email", OPERATOR, "--password-stdin"],
        input=f"{PASSWORD}\n".encode(),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr.decode()
    assert f"Created admin user {OPERATOR}" in created.stdout.decode()
    with (
        process(["serve", "--no-migrate"], env, tmp_path, log) as server,
        process(["worker"], env, tmp_path, log),
    ):
        try:
            await wait_until_up(url, server)
        except AssertionError as error:
            raise AssertionError(f"{error}; its log:\n{log.read_text()[-3000:]}") from None
        yield url


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is needed: apt-get install chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Watched:
    """What went wrong in the browser beside the test's steps: script errors, refused loads, error answers."""

    problems: list[str] = field(default_factory=list)
    error_answers: list[tuple[str, str, int]] = field(default_factory=list)


@pytest.fixture
async def watched() -> Watched:
    return Watched()


@pytest.fixture
async def page(chromium: Browser, service: str, watched: Watched) -> AsyncIterator[Page]:
    context = await chromium.new_context(base_url=service, viewport={"width": 1280, "height": 900})
    opened = await context.new_page()
    opened.on("pageerror", lambda error: watched.problems.append(f"script error: {error}"))
    opened.on(
        "console",
        lambda message: (
            watched.problems.append(f"console {message.type}: {message.text}")
            # An error answer is logged as a failed load too; the answers themselves are kept below.
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    opened.on(
        "response",
        lambda response: (
            watched.error_answers.append(
                (response.request.method, urlsplit(response.url).path, response.status)
            )
            if response.status >= 400
            else None
        ),
    )
    try:
        yield opened
    finally:
        await context.close()


async def snap(page: Page, name: str, *, whole: bool = True) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=whole)


def people_csv() -> tuple[bytes, dict[int, tuple[str, str]]]:
    """1,000 people and the bad rows among them; returns the file and each bad row by its line number."""
    lines = ["email,name,attributes"]
    bad = {}
    for n in range(PEOPLE):
        if n in BAD_ROWS:
            lines.append(BAD_ROWS[n][0])
            bad[len(lines)] = BAD_ROWS[n]
        lines.append(f"person{n:04d}@example.com,Person {n},{{}}")
    return ("\n".join(lines) + "\n").encode(), bad


async def log_in(page: Page) -> None:
    await page.goto("/admin")
    await expect(page).to_have_url(re.compile(r"/admin/login$"))
    await page.get_by_label("Email address").fill(OPERATOR)
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_have_text("The email address or the password is not right.")
    await expect(page.get_by_label("Email address")).to_have_value(OPERATOR)
    await snap(page, "01-login-refused")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(re.compile(r"/admin$"))
    await expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    await expect(page.get_by_role("link", name=OPERATOR)).to_be_visible()
    await snap(page, "02-dashboard")


async def create_list(page: Page) -> None:
    await page.get_by_role("navigation", name="Sections").get_by_role("link", name="Lists").click()
    await expect(page.get_by_role("heading", name="Lists", level=1)).to_be_visible()
    form = page.locator("form[action='/admin/lists']")
    await form.get_by_label("Slug").fill("spring")
    await form.get_by_label("Name").fill("Spring festival")
    await form.get_by_label("Description").fill("News about the festival")
    await form.get_by_label("Single: subscribed at once").check()
    await form.get_by_role("button", name="Create list").click()
    await expect(page).to_have_url(re.compile(r"/admin/lists/\d+$"))
    await expect(page.get_by_role("status")).to_have_text("The list Spring festival is created.")
    await expect(page.get_by_text("0 confirmed, 0 pending.")).to_be_visible()
    await snap(page, "03-list-created")


async def import_people(page: Page) -> None:
    csv, bad = people_csv()
    await page.get_by_role("link", name="Import & export").click()
    await page.get_by_label("CSV file").set_input_files(
        {"name": "people.csv", "mimeType": "text/csv", "buffer": csv}
    )
    await page.get_by_label("Into the list").select_option("spring")
    await page.get_by_role("button", name="Import").click()

    report = page.locator("#report")
    await expect(report.get_by_role("heading")).to_have_text("Report for people.csv")
    counts = report.locator("ul.counts")
    await expect(counts).to_contain_text(f"new subscribers: {PEOPLE}")
    await expect(counts).to_contain_text("updated: 0")
    await expect(counts).to_contain_text(f"subscribed to spring: {PEOPLE}")
    await expect(counts).to_contain_text(f"rejected: {len(bad)}")
    rows = report.locator("table.rejected tbody tr")
    await expect(rows).to_have_count(len(bad))
    for row, (line, (content, word)) in zip(await rows.all(), sorted(bad.items()), strict=True):
        cells = row.locator("td")
        await expect(cells.nth(0)).to_have_text(str(line))
        await expect(cells.nth(1)).to_have_text(content.split(",")[0].strip('"'))
        await expect(cells.nth(2)).to_contain_text(word)
    await snap(page, "04-import-report")

    await page.goto("/admin/lists")
    row = page.get_by_role("row", name=re.compile("Spring festival"))
    await expect(row.locator("td.num").first).to_have_text(f"{PEOPLE:,}")
    await row.get_by_role("link", name="Subscribers").click()
    await page.get_by_label("Email or name").fill(REFUSED)
    await page.get_by_role("button", name="Search").click()
    found = page.locator("main table tbody tr")
    await expect(found).to_have_count(1)
    await expect(found).to_contain_text(REFUSED)
    await expect(found).to_contain_text("Person 417")
    await snap(page, "05-subscribers")


async def compose(page: Page) -> str:
    """A draft to the new list, written while the live preview follows; returns the issue page's URL."""
    await page.get_by_role("link", name="Issues").click()
    form = page.locator("form[action='/admin/issues']")
    await form.get_by_label("Subject").fill("Spring news")
    await form.get_by_label("Newsletter").uncheck()
    await form.get_by_label("Spring festival").check()
    await form.get_by_label("Content").fill("Draft")
    await form.get_by_role("button", name="Create draft").click()
    await expect(page).to_have_url(re.compile(r"/admin/issues/\d+$"))
    await expect(page.get_by_role("status")).to_have_text("The draft is saved.")
    issue_url = page.url

    frame = page.frame_locator("iframe[name='preview-frame']")
    text = page.locator("[data-preview='text']")
    await expect(text).to_contain_text("Draft")

    compose_form = page.locator("form#compose")
    await compose_form.get_by_label("Subject").fill("Spring news: the programme")
    await compose_form.get_by_label("Content").fill(MARKDOWN)
    # Nothing is saved: the preview follows what is typed, rendered by the server as it will be sent.
    await expect(frame.locator("h1")).to_have_text("Spring news")
    await expect(frame.locator("strong")).to_have_text("readers")
    link = frame.get_by_role("link", name="programme")
    await expect(link).to_have_attribute("href", "https://example.com/programme?year=2026&lang=en")
    await expect(frame.locator("li")).to_have_text(["talks on Friday", "workshops on Saturday"])
    await expect(frame.get_by_role("link", name=re.compile("unsubscribe", re.IGNORECASE))).to_be_visible()
    await expect(page.locator("[data-preview='subject']")).to_have_text("Spring news: the programme")
    await expect(text).to_contain_text("# Spring news")
    await expect(text).to_contain_text("Hello **readers**")
    await expect(text).to_contain_text("/unsubscribe/preview")
    await expect(text).not_to_contain_text("Draft")
    await page.locator("#preview").scroll_into_view_if_needed()
    # A viewport, not the whole page: Chromium paints the frame blank when it resizes the page for a full one.
    await snap(page, "06-live-preview", whole=False)

    await compose_form.get_by_role("button", name="Save draft").click()
    await expect(page.get_by_role("status")).to_have_text("The draft is saved.")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Spring news: the programme")
    await expect(page.locator("[data-preview='text']")).to_contain_text("Hello **readers**")
    return issue_url


async def watch_progress(page: Page, *, total: int, sent: int, failed: int) -> list[int]:
    """Watch the issue page update itself until the issue is sent; returns the progress values it showed."""
    seen: list[int] = []
    for _ in range(1200):  # two minutes
        try:
            status, value = await page.evaluate(
                """() => [document.querySelector("section.status-line [data-field='status']").textContent,
                          document.querySelector("section.status-line progress").value]"""
            )
        except PlaywrightError:
            status, value = "", None  # the page reloads itself when the status changes
        if status == "sent":
            break
        # The script sets the bar's value (the property); the attribute keeps the value the page came with.
        if value is not None and (not seen or seen[-1] != value):
            seen.append(int(value))
        await asyncio.sleep(0.1)
    line = page.locator("section.status-line")
    await expect(line.locator("[data-field='status']")).to_have_text("sent")
    await expect(line.locator("[data-field='progress']")).to_have_text("100")
    for name, expected in (("total", total), ("sent", sent), ("failed", failed), ("pending", 0)):
        await expect(line.locator(f"[data-field='{name}']")).to_have_text(str(expected))
    return seen


def received_by(smtp: SMTPServer) -> Counter[str]:
    return Counter(address for message in list(smtp.received) for address in message.recipients)


async def test_an_operator_imports_sends_and_retries_in_a_browser(
    page: Page, watched: Watched, smtp: SMTPServer, database_url: str
) -> None:
    await log_in(page)
    await create_list(page)
    await import_people(page)
    issue_url = await compose(page)

    await page.get_by_label("Now").check()
    await page.get_by_role("button", name="Send", exact=True).click()
    await expect(page).to_have_url(issue_url)
    await expect(page.get_by_role("status")).to_have_text("Sending.")
    await snap(page, "07-sending")
    seen = await watch_progress(page, total=PEOPLE, sent=PEOPLE - 1, failed=1)
    assert any(0 < value < 100 for value in seen), f"the page never showed a send under way: {seen}"
    assert seen == sorted(seen), f"the progress went backwards: {seen}"
    await snap(page, "08-sent")
    copies = received_by(smtp)
    assert len(copies) == PEOPLE - 1 and set(copies.values()) == {1}
    assert REFUSED not in copies

    # The refusal is in the ledger with its reason; it also suppressed the address, which the ledger says.
    await page.get_by_role("link", name="Failures", exact=True).click()
    await expect(page.get_by_role("heading", name="Delivery ledger")).to_be_visible()
    failures = page.locator("table.ledger tbody tr")
    await expect(failures).to_have_count(1)
    cells = failures.locator("td")
    await expect(cells.nth(0)).to_have_text(REFUSED)
    await expect(cells.nth(2)).to_have_text("failed")
    await expect(cells.nth(4)).to_contain_text(REFUSAL)
    await expect(cells.nth(4)).to_contain_text("The address is suppressed (hard_bounce).")
    warning = page.get_by_role("note")
    await expect(warning).to_contain_text("1 of the failed addresses is on the suppression list")
    await snap(page, "09-ledger-failures")

    await cells.nth(4).get_by_role("button", name="Lift the suppression").click()
    await expect(page).to_have_url(re.compile(r"/admin/issues/\d+/deliveries\?status=failed$"))
    await expect(page.get_by_role("status")).to_have_text(f"{REFUSED} may be mailed again.")
    await expect(cells.nth(4)).not_to_contain_text("suppressed")
    await expect(warning).to_have_count(0)

    await page.get_by_role("button", name="Retry failed (1)").click()
    await expect(page).to_have_url(issue_url)
    await expect(page.get_by_role("status")).to_have_text("1 failed delivery queued again.")
    await snap(page, "10-retrying")
    await watch_progress(page, total=PEOPLE, sent=PEOPLE, failed=0)
    await snap(page, "11-delivered")
    copies = received_by(smtp)
    assert copies[REFUSED] == 1 and len(copies) == PEOPLE and set(copies.values()) == {1}
    [message] = [message for message in smtp.received if REFUSED in message.recipients]
    assert message.message["Subject"] == "Spring news: the programme"
    assert "Hello <strong>readers</strong>" in message.body("html")

    await page.get_by_role("link", name="Dashboard").click()
    lists = page.get_by_role("row", name=re.compile("Spring festival"))
    await expect(lists.locator("td.num").first).to_have_text(f"{PEOPLE:,}")
    issue = page.get_by_role("row", name=re.compile("Spring news: the programme"))
    await expect(issue.locator("[data-field='progress']")).to_have_text("100")
    await expect(issue.locator("td.num").first).to_have_text(str(PEOPLE))
    await snap(page, "12-dashboard")

    conn = await asyncpg.connect(database_url)
    try:
        statuses = await conn.fetch("SELECT status, count(*) FROM deliveries GROUP BY status")
    finally:
        await conn.close()
    assert {row["status"]: row["count"] for row in statuses} == {"sent": PEOPLE}
    assert not watched.problems
    # The one error answer is the refused login, on purpose.
    assert watched.error_answers == [("POST", "/admin/login", 401)]


async def test_an_operator_connects_a_webhook_and_finds_its_test_event_in_a_browser(
    page: Page, watched: Watched
) -> None:
    async with running_receiver() as receiver:
        await log_in(page)
        await page.get_by_role("navigation", name="Sections").get_by_role("link", name="Webhooks").click()
        await expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()
        form = page.locator("form[action='/admin/webhooks']")
        await form.get_by_label("URL").fill("ftp://crm.example/hooks")
        await form.get_by_label("Description").fill("The CRM")
        await form.get_by_label("subscription.confirmed").check()
        await form.get_by_role("button", name="Create endpoint").click()
        await expect(page.get_by_role("alert")).to_have_text(
            "url: only http:// and https:// URLs can receive webhooks"
        )
        await expect(form.get_by_label("URL")).to_have_value("ftp://crm.example/hooks")
        await expect(form.get_by_label("Description")).to_have_value("The CRM")
        await expect(form.get_by_label("subscription.confirmed")).to_be_checked()
        await snap(page, "13-webhook-refused")

        await form.get_by_label("URL").fill(receiver.url)
        await form.get_by_role("button", name="Create endpoint").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text(receiver.url)
        await expect(page.get_by_role("status")).to_contain_text("shown only this once")
        receiver.secret = await page.locator("#signing-secret").text_content()
        await snap(page, "14-webhook-created")

        await page.get_by_role("button", name="Send a test event").first.click()
        await expect(page).to_have_url(re.compile(r"/admin/webhooks/\d+/attempts$"))
        await receiver.wait_for(1, timeout=30)  # the worker process sends it
        cells = page.locator("table.attempts tbody tr").first.locator("td")
        # Received, and recorded a moment later: until then the table says "No attempt yet."
        for _ in range(100):
            await page.reload()
            if await cells.count() > 1:
                break
            await asyncio.sleep(0.1)
        await expect(cells.nth(1)).to_contain_text("webhook.test")
        await expect(cells.nth(2)).to_have_text("204")
        await expect(cells.nth(5)).to_contain_text("delivered")
        await snap(page, "15-webhook-attempts")

        await page.get_by_role("navigation", name="Sections").get_by_role("link", name="Events").click()
        await page.get_by_label("Type").select_option("webhook.test")
        await page.get_by_role("button", name="Filter").click()
        rows = page.locator("table.events tbody tr")
        await expect(rows).to_have_count(1)
        await expect(rows.locator("td").nth(1)).to_have_text("webhook.test")
        await expect(rows.locator("td").nth(4)).to_contain_text('"message":"A test event, sent on request."')
        await snap(page, "16-events")

    [request] = receiver.received
    assert request.verified, "the secret the page showed verifies the signature"
    assert request.event["type"] == "webhook.test"
    assert not watched.problems
    assert watched.error_answers == [("POST", "/admin/login", 401), ("POST", "/admin/webhooks", 422)]
