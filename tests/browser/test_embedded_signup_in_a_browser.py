"""The sign-up form of a list's admin page, pasted into another website, in a real browser (Chromium driven by
Playwright): the other site is a page served from a second local origin (another port), the service is the
real app on its own port, with a real SMTP server.

With the other site's origin in NEWSLETTER_ALLOWED_ORIGINS, the snippet's script signs the reader up with a
cross-origin JSON request and shows the answer in place. Without it, the browser stops the request at the
pre-flight, nothing is written, and the script says where to sign up instead; the same form with JavaScript
off still posts the plain way and lands on the service's own page.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.async_api import Browser, expect

from newsletter.web.public import ACCEPTED_DETAIL
from tests.admin import create_admin, signed_in
from tests.browser import test_admin_in_a_browser as story
from tests.harness import SMTPServer, TestApp, free_port, spawn_app

pytestmark = pytest.mark.asyncio

chromium = story.chromium  # Debian's Chromium, as the other browser tests launch it

READER = "ada@example.com"
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A partner's blog</title></head>
<body><h1>A partner's blog</h1><p>Some article.</p>
{snippet}
</body></html>
"""


@contextmanager
def other_site(port: int, body: Iterator[str]) -> Iterator[str]:
    """A small HTTP server on another port of the loopback: another origin, serving one page."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            content = PAGE.format(snippet=next(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def snippet_of_list(app: TestApp, slug: str) -> str:
    """The snippet as the operator copies it from the list's admin page."""
    list_id = await app.add_list(slug, "Weekly news")
    await create_admin(app)
    async with await signed_in(app) as operator:
        page = (await operator.get(f"/admin/lists/{list_id}")).text
    found = re.search(r'<textarea id="embed-snippet"[^>]*>(.*?)</textarea>', page, re.DOTALL)
    assert found, "the list page shows no snippet"
    return html.unescape(found[1])


async def people(app: TestApp) -> int:
    count: int = await app.pool.fetchval("SELECT count(*) FROM subscribers")
    return count


@pytest.mark.parametrize("allowed", [True, False], ids=["allowed-origin", "other-origin"])
async def test_the_embedded_form_signs_up_from_another_site_only_when_its_origin_is_allowed(
    database_url: str, smtp: SMTPServer, chromium: Browser, allowed: bool
) -> None:
    port = free_port()
    site_origin = f"http://127.0.0.1:{port}"
    origins = site_origin if allowed else "https://somewhere-else.example"
    async with spawn_app(database_url, smtp, allowed_origins=origins) as app:
        snippet = await snippet_of_list(app, "weekly")
        with other_site(port, iter(lambda: snippet, None)) as site:
            context = await chromium.new_context()
            page = await context.new_page()
            await page.goto(site)
            await page.get_by_label("Email address").fill(READER)
            await page.get_by_label("Name (optional)").fill("Ada")
            await page.get_by_role("button", name="Subscribe to Weekly news").click()
            status = page.get_by_role("status")
            if allowed:
                await expect(status).to_have_text(ACCEPTED_DETAIL)
                await expect(page.get_by_label("Email address")).to_have_value("")
            else:
                await expect(status).to_have_text(
                    "This site cannot sign you up directly. Please subscribe on the newsletter's page: "
                    f"{app.settings.base_url}/?list=weekly"
                )
            assert page.url.rstrip("/") == site  # the reader stayed on the other site
            await context.close()
            await app.dispatch_all_pending()

            if allowed:
                assert await app.subscription_status(READER, "weekly") == "pending"
                [link] = app.confirmation_links(READER)
                assert (await app.confirm(link)).status_code == 200
                assert await app.subscription_status(READER, "weekly") == "confirmed"
                return
            assert await people(app) == 0
            assert app.smtp.received == []

            # Without JavaScript the same form posts the plain way, from any site, and the reader lands on
            # the service's own page.
            plain = await chromium.new_context(java_script_enabled=False)
            page = await plain.new_page()
            await page.goto(site)
            await page.get_by_label("Email address").fill(READER)
            await page.get_by_role("button", name="Subscribe to Weekly news").click()
            await expect(page.get_by_text("confirmation email is on its way")).to_be_visible()
            assert page.url == f"{app.settings.base_url}/subscriptions"
            await plain.close()
            assert await app.subscription_status(READER, "weekly") == "pending"


async def test_with_the_proof_of_work_challenge_on_the_embedded_form_solves_it_and_signs_up(
    database_url: str, smtp: SMTPServer, chromium: Browser
) -> None:
    """The snippet's script fetches a challenge cross-origin, solves it, and signs the reader up with one
    click; the solution it sent is spent."""
    port = free_port()
    site_origin = f"http://127.0.0.1:{port}"
    async with spawn_app(database_url, smtp, allowed_origins=site_origin, signup_challenge="pow") as app:
        snippet = await snippet_of_list(app, "weekly")
        assert "/subscriptions/challenge" in snippet
        with other_site(port, iter(lambda: snippet, None)) as site:
            context = await chromium.new_context()
            page = await context.new_page()
            sent: list[str] = []
            page.on(
                "request",
                lambda request: sent.append(request.post_data or "") if request.method == "POST" else None,
            )
            await page.goto(site)
            await page.get_by_label("Email address").fill(READER)
            await page.get_by_role("button", name="Subscribe to Weekly news").click()
            await expect(page.get_by_role("status")).to_have_text(ACCEPTED_DETAIL)
            await context.close()
        assert await app.subscription_status(READER, "weekly") == "pending"
        [body] = [data for data in sent if data]
        replayed = await app.client.post(
            "/subscriptions", content=body, headers={"Content-Type": "application/json"}
        )
        assert replayed.status_code == 422, "a solution is good once"
