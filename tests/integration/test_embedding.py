"""Embedding the sign-up form in another website: the snippet on a list's admin page, and cross-origin
sign-ups (CORS) from the origins in NEWSLETTER_ALLOWED_ORIGINS and nowhere else, on the real app, database and
SMTP."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest

from newsletter.domain.vocabulary import Visibility
from tests.admin import AdminBrowser, create_admin, signed_in
from tests.harness import SMTPServer, TestApp, admin_client, spawn_app

pytestmark = pytest.mark.asyncio

PARTNER = "https://partner.example"  # a site the operator allows
STRANGER = "https://elsewhere.example"  # any other site
CORS_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
)


@pytest.fixture
async def app(database_url: str, smtp: SMTPServer) -> AsyncIterator[TestApp]:
    async with spawn_app(database_url, smtp, allowed_origins=f"{PARTNER}, http://localhost:9999") as served:
        yield served


@pytest.fixture
async def browser(app: TestApp) -> AsyncIterator[AdminBrowser]:
    await create_admin(app)
    async with await signed_in(app) as signed:
        yield signed


def preflight_headers(origin: str, method: str = "POST", headers: str = "content-type") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {name: response.headers[name] for name in CORS_HEADERS if name in response.headers}


async def people(app: TestApp) -> int:
    count: int = await app.pool.fetchval("SELECT count(*) FROM subscribers")
    return count


async def test_an_allowed_site_is_answered_its_preflight_and_signs_a_reader_up_with_json(
    app: TestApp,
) -> None:
    preflight = await app.client.options("/subscriptions", headers=preflight_headers(PARTNER))
    signed_up = await app.client.post(
        "/subscriptions", json={"email": "ada@example.com", "name": "Ada"}, headers={"Origin": PARTNER}
    )
    await app.dispatch_all_pending()

    assert preflight.status_code == 204
    assert cors_headers(preflight) == {
        "access-control-allow-origin": PARTNER,
        "access-control-allow-methods": "POST",
        "access-control-allow-headers": "Content-Type",
    }
    assert preflight.headers["vary"] == "Origin"
    assert signed_up.status_code == 202, signed_up.text
    assert cors_headers(signed_up) == {"access-control-allow-origin": PARTNER}
    assert signed_up.json()["status"] == "accepted"
    assert await app.subscription_status("ada@example.com") == "pending"
    [link] = app.confirmation_links("ada@example.com")
    assert (await app.confirm(link)).status_code == 200
    assert await app.subscription_status("ada@example.com") == "confirmed"


async def test_an_origin_is_compared_as_a_browser_sends_it(app: TestApp) -> None:
    """The setting's `http://localhost:9999` is that origin; another port or scheme is another site."""
    same = await app.client.options("/subscriptions", headers=preflight_headers("http://localhost:9999"))
    other_port = await app.client.options(
        "/subscriptions", headers=preflight_headers("http://localhost:9998")
    )
    other_scheme = await app.client.options(
        "/subscriptions", headers=preflight_headers("http://partner.example")
    )
    assert same.status_code == 204
    assert (other_port.status_code, other_scheme.status_code) == (403, 403)


async def test_another_site_is_refused_its_preflight_and_its_json_writes_nothing(app: TestApp) -> None:
    preflight = await app.client.options("/subscriptions", headers=preflight_headers(STRANGER))
    posted = await app.client.post(
        "/subscriptions", json={"email": "eve@example.com"}, headers={"Origin": STRANGER}
    )
    await app.dispatch_all_pending()

    for refused in (preflight, posted):
        assert refused.status_code == 403
        assert cors_headers(refused) == {}
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["detail"] == (
            f"Sign-ups from pages at {STRANGER} are not accepted: "
            "the origin is not in NEWSLETTER_ALLOWED_ORIGINS."
        )
    assert await people(app) == 0
    assert app.smtp.received == []


async def test_a_preflight_for_more_than_a_json_post_is_refused_even_from_an_allowed_site(
    app: TestApp,
) -> None:
    for method, headers in (("PUT", "content-type"), ("POST", "content-type, x-api-key"), ("DELETE", "")):
        refused = await app.client.options(
            "/subscriptions", headers=preflight_headers(PARTNER, method, headers)
        )
        assert refused.status_code == 403, (method, headers)
        assert cors_headers(refused) == {}
        assert "at most a Content-Type header" in refused.json()["detail"]


async def test_a_plain_form_posts_from_any_site_and_its_answer_carries_no_cors_header(app: TestApp) -> None:
    """A form's post is not stopped by the browser (it is a navigation): it works, and the answer is our own
    page, which the other site cannot read."""
    posted = await app.client.post(
        "/subscriptions", data={"email": "bob@example.com", "list": "default"}, headers={"Origin": STRANGER}
    )
    assert posted.status_code == 202
    assert "text/html" in posted.headers["content-type"]
    assert cors_headers(posted) == {}
    assert await app.subscription_status("bob@example.com") == "pending"


async def test_the_service_itself_and_clients_without_an_origin_are_not_cross_origin(app: TestApp) -> None:
    own = await app.client.post(
        "/subscriptions", json={"email": "own@example.com"}, headers={"Origin": app.settings.base_url}
    )
    plain = await app.client.post("/subscriptions", json={"email": "curl@example.com"})
    assert (own.status_code, plain.status_code) == (202, 202)
    assert cors_headers(own) == cors_headers(plain) == {}


async def test_the_admin_pages_and_the_api_never_answer_cross_origin(
    app: TestApp, browser: AdminBrowser
) -> None:
    admin = await admin_client(app)
    for path in ("/api/v1/lists", "/api/v1/subscribers", "/admin", "/admin/login", "/subscriptions/confirm"):
        preflight = await app.client.options(path, headers=preflight_headers(PARTNER))
        assert preflight.status_code != 204, path
        assert cors_headers(preflight) == {}, path
    listed = await app.client.get("/api/v1/lists", headers={**admin.headers, "Origin": PARTNER})
    created = await app.client.post(
        "/api/v1/subscribers",
        json={"email": "api@example.com", "lists": ["default"]},
        headers={**admin.headers, "Origin": PARTNER},
    )
    page = await browser.client.get("/admin", headers={"Origin": PARTNER})
    assert (listed.status_code, created.status_code, page.status_code) == (200, 201, 200)
    for response in (listed, created, page):
        assert cors_headers(response) == {}


async def test_without_allowed_origins_no_site_may_sign_up_with_json(
    database_url: str, smtp: SMTPServer
) -> None:
    async with spawn_app(database_url, smtp) as app:
        preflight = await app.client.options("/subscriptions", headers=preflight_headers(PARTNER))
        posted = await app.client.post(
            "/subscriptions", json={"email": "ada@example.com"}, headers={"Origin": PARTNER}
        )
        assert (preflight.status_code, posted.status_code) == (403, 403)
        assert cors_headers(preflight) == cors_headers(posted) == {}
        assert await people(app) == 0


# The snippet on a list's page


class FormFields(HTMLParser):
    """The action of the first form and the fields a browser would post from it, as typed in by a reader."""

    def __init__(self, typed: dict[str, str]) -> None:
        super().__init__()
        self.typed = typed
        self.action: str | None = None
        self.method: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self.action, self.method = values["action"], values["method"]
        if tag == "input" and "name" in values:
            self.fields[values["name"]] = self.typed.get(values["name"], values.get("value", ""))


def snippet_of(page: str) -> str:
    found = re.search(r'<textarea id="embed-snippet"[^>]*>(.*?)</textarea>', page, re.DOTALL)
    assert found, "the page shows no snippet"
    return html.unescape(found[1])


async def test_a_public_lists_page_shows_a_snippet_whose_plain_form_signs_up_from_another_site(
    app: TestApp, browser: AdminBrowser
) -> None:
    list_id = await app.add_list("weekly", "Weekly news")
    page = await browser.get(f"/admin/lists/{list_id}")
    snippet = snippet_of(page.text)
    form = FormFields({"email": "reader@example.com", "name": "Reader"})
    form.feed(snippet)

    assert page.status_code == 200
    assert form.action == f"{app.settings.base_url}/subscriptions" and form.method == "post"
    assert form.fields == {"list": "weekly", "email": "reader@example.com", "name": "Reader", "website": ""}
    assert "<script>" in snippet and "Subscribe to Weekly news" in snippet
    assert PARTNER in page.text  # the page says which sites the script works from

    # Pasted into a page of another site, the form is posted by the browser, form-encoded, to its action.
    async with httpx.AsyncClient(timeout=10) as reader:
        posted = await reader.post(form.action, data=form.fields, headers={"Origin": STRANGER})
    await app.dispatch_all_pending()
    assert posted.status_code == 202
    assert "confirmation email is on its way" in posted.text
    assert await app.subscription_status("reader@example.com", "weekly") == "pending"
    [link] = app.confirmation_links("reader@example.com")
    assert urlsplit(link).netloc == urlsplit(app.settings.base_url).netloc


async def test_a_private_list_has_no_snippet_and_its_page_says_why(
    app: TestApp, browser: AdminBrowser
) -> None:
    list_id = await app.add_list("staff", visibility=Visibility.PRIVATE)
    page = await browser.get(f"/admin/lists/{list_id}")
    assert page.status_code == 200
    assert 'id="embed-snippet"' not in page.text
    assert "No form to embed: this list is private" in page.text


async def test_a_list_refused_its_changes_still_shows_its_saved_snippet(
    app: TestApp, browser: AdminBrowser
) -> None:
    list_id = await app.add_list("weekly", "Weekly news")
    refused = await browser.post(f"/admin/lists/{list_id}", {"name": "", "visibility": "private"})
    assert refused.status_code == 422
    assert 'name="list" value="weekly"' in snippet_of(refused.text)


async def test_with_the_proof_of_work_challenge_on_the_page_warns_and_the_plain_form_leads_to_ours(
    database_url: str, smtp: SMTPServer
) -> None:
    async with spawn_app(database_url, smtp, signup_challenge="pow") as app:
        list_id = await app.add_list("weekly", "Weekly news")
        await create_admin(app)
        async with await signed_in(app) as operator:
            page = await operator.get(f"/admin/lists/{list_id}")
        form = FormFields({"email": "reader@example.com"})
        form.feed(snippet_of(page.text))
        assert form.action is not None
        async with httpx.AsyncClient(timeout=10) as reader:
            posted = await reader.post(form.action, data=form.fields, headers={"Origin": STRANGER})

        assert "the form's script solves it before it sends" in page.text
        assert 'data-challenge="' in snippet_of(page.text)
        assert posted.status_code == 422
        assert 'action="/subscriptions"' in posted.text  # the sign-up page, to try again with its challenge
        assert await people(app) == 0


async def test_an_allowed_site_may_read_a_challenge_and_no_other(database_url: str, smtp: SMTPServer) -> None:
    """The embedded form's script fetches a proof-of-work challenge cross-origin before it signs up."""
    async with spawn_app(database_url, smtp, signup_challenge="pow", allowed_origins=PARTNER) as app:
        allowed = await app.client.get("/subscriptions/challenge", headers={"Origin": PARTNER})
        other = await app.client.get("/subscriptions/challenge", headers={"Origin": STRANGER})
    assert allowed.status_code == 200 and "challenge" in allowed.json()
    assert cors_headers(allowed) == {"access-control-allow-origin": PARTNER}
    assert allowed.headers["vary"] == "Origin"
    assert other.status_code == 200 and cors_headers(other) == {}
