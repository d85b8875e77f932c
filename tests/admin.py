"""The admin web interface as a browser without JavaScript uses it: cookies, forms and their CSRF tokens."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx

from newsletter.domain.subscriber import SubscriberEmail
from newsletter.services.access.accounts import create_user
from tests.harness import TestApp

ADMIN_EMAIL = "operator@example.com"
ADMIN_PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return html.unescape(found[1])


class AdminBrowser:
    """One browser: its own cookie jar, following no redirect by itself so that tests see each answer."""

    def __init__(self, app: TestApp) -> None:
        self.app = app
        self.client = httpx.AsyncClient(base_url=app.settings.base_url, timeout=30)

    async def __aenter__(self) -> AdminBrowser:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.aclose()

    @property
    def session_id(self) -> str | None:
        return self.client.cookies.get("nl_session", path="/admin")

    async def login(
        self, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD, next_url: str = ""
    ) -> httpx.Response:
        page = await self.client.get("/admin/login")
        fields = {"csrf_token": csrf_of(page.text), "email": email, "password": password, "next": next_url}
        return await self.client.post("/admin/login", data=fields)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params)

    async def csrf(self) -> str:
        page = await self.client.get("/admin/password")
        assert page.status_code == 200, page.status_code
        return csrf_of(page.text)

    async def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kwargs: Any
    ) -> httpx.Response:
        fields = dict(data or {})
        if csrf:
            fields["csrf_token"] = await self.csrf()
        return await self.client.post(path, data=fields, **kwargs)

    async def follow(self, response: httpx.Response) -> httpx.Response:
        """The page a 303 leads to."""
        assert response.status_code == 303, (response.status_code, response.text[:500])
        return await self.client.get(response.headers["location"])


async def create_admin(app: TestApp, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> None:
    await create_user(app.db, SubscriberEmail.parse(email), password)


async def signed_in(app: TestApp) -> AdminBrowser:
    browser = AdminBrowser(app)
    response = await browser.login()
    assert response.status_code == 303, response.text
    return browser
