"""Logging in to the admin web interface: sessions, CSRF, throttling, passwords and API tokens."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.routing import Route

from newsletter.web.admin import ROUTERS
from tests.admin import ADMIN_EMAIL, ADMIN_PASSWORD, AdminBrowser, create_admin, csrf_of, signed_in
from tests.harness import SMTPServer, TestApp, spawn_app

pytestmark = pytest.mark.asyncio

LOGIN_ERROR = "The email address or the password is not right."
PUBLIC = {"/admin/login"}


@pytest.fixture
async def admin_app(app: TestApp) -> TestApp:
    await create_admin(app)
    return app


def _admin_routes(method: str) -> list[str]:
    paths = []
    for route in (route for router in ROUTERS for route in router.routes):
        assert isinstance(route, Route)
        if method in (route.methods or set()) and route.path not in PUBLIC:
            paths.append(re.sub(r"\{[^}]+\}", "1", route.path))
    return paths


async def test_every_admin_page_sends_a_stranger_to_the_login_page(admin_app: TestApp) -> None:
    pages = _admin_routes("GET")
    assert {"/admin", "/admin/subscribers", "/admin/issues/1", "/admin/settings"} <= set(pages)
    async with AdminBrowser(admin_app) as stranger:
        for path in pages:
            response = await stranger.get(path, page="2")
            assert response.status_code == 303, path
            location = urlsplit(response.headers["location"])
            assert location.path == "/admin/login", path
            if path != "/admin":
                assert parse_qs(location.query)["next"] == [f"{path}?page=2"], path


async def test_every_admin_form_refuses_a_stranger_and_changes_nothing(admin_app: TestApp) -> None:
    forms = _admin_routes("POST")
    assert {"/admin/lists", "/admin/issues/1/send", "/admin/subscribers/1/delete", "/admin/tokens"} <= set(
        forms
    )
    async with AdminBrowser(admin_app) as stranger:
        for path in forms:
            response = await stranger.client.post(path, data={"slug": "sneaky", "name": "Sneaky"})
            assert response.status_code == 303, path
            assert urlsplit(response.headers["location"]).path == "/admin/login", path
    assert await admin_app.pool.fetchval("SELECT count(*) FROM lists WHERE slug = 'sneaky'") == 0


async def test_a_login_leads_to_the_page_asked_for(admin_app: TestApp) -> None:
    async with AdminBrowser(admin_app) as browser:
        first = await browser.get("/admin/subscribers", q="ada")
        login_page = await browser.client.get(first.headers["location"])
        assert 'value="/admin/subscribers?q=ada"' in login_page.text

        response = await browser.login(next_url="/admin/subscribers?q=ada")

        assert response.status_code == 303
        assert response.headers["location"] == "/admin/subscribers?q=ada"
        assert (await browser.follow(response)).status_code == 200


async def test_a_login_never_leads_out_of_the_admin_interface(admin_app: TestApp) -> None:
    for target in ("https://evil.example/", "//evil.example/admin", "/api/v1/lists", "/admin\\@evil"):
        async with AdminBrowser(admin_app) as browser:
            response = await browser.login(next_url=target)
            assert response.headers["location"] == "/admin", target


async def test_a_failed_login_shows_its_error_once(admin_app: TestApp) -> None:
    async with AdminBrowser(admin_app) as browser:
        failed = await browser.login(password="not the password")

        assert failed.status_code == 401
        assert failed.text.count(LOGIN_ERROR) == 1
        assert browser.session_id is None
        again = await browser.get("/admin/login")
        assert again.status_code == 200
        assert LOGIN_ERROR not in again.text
        assert (await browser.get("/admin")).status_code == 303


async def test_an_unknown_address_fails_exactly_as_a_wrong_password_does(admin_app: TestApp) -> None:
    async with AdminBrowser(admin_app) as browser:
        wrong_password = await browser.login(password="not the password")
        unknown_user = await browser.login(email="nobody@example.com", password="not the password")

    assert wrong_password.status_code == unknown_user.status_code == 401
    assert unknown_user.text.replace("nobody@example.com", ADMIN_EMAIL) == wrong_password.text


async def test_the_session_id_changes_at_every_login(admin_app: TestApp) -> None:
    async with AdminBrowser(admin_app) as browser:
        # A session id planted by someone else before the login is not adopted.
        planted = "A" * 43
        browser.client.cookies.set("nl_session", planted, domain="127.0.0.1", path="/admin")
        await browser.login()
        first = browser.session_id
        assert first is not None and first != planted

        # Logging in again from a browser that holds a live session replaces that session.
        browser.client.cookies.delete("nl_session")
        login_page = await browser.get("/admin/login")
        browser.client.cookies.set("nl_session", first, domain="127.0.0.1", path="/admin")
        fields = {"csrf_token": csrf_of(login_page.text), "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        assert (await browser.client.post("/admin/login", data=fields)).status_code == 303
        second = browser.session_id

    assert second is not None and second != first
    async with AdminBrowser(admin_app) as old:
        old.client.cookies.set("nl_session", first, domain="127.0.0.1", path="/admin")
        assert (await old.get("/admin")).status_code == 303


async def test_the_session_cookie_is_httponly_samesite_lax_and_scoped_to_the_admin(
    admin_app: TestApp,
) -> None:
    async with AdminBrowser(admin_app) as browser:
        response = await browser.login()

    cookie = next(
        value for value in response.headers.get_list("set-cookie") if value.startswith("nl_session=")
    )
    attributes = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")}
    assert "httponly" in attributes
    assert attributes["samesite"].strip().lower() == "samesite=lax"
    assert attributes["path"].strip() == "Path=/admin"
    assert "secure" not in attributes  # the test server's base URL is http://
    stored = await admin_app.pool.fetch("SELECT id_hash FROM admin_sessions")
    session_id = cookie.split(";")[0].split("=", 1)[1]
    assert len(stored) == 1 and session_id.encode() not in stored[0]["id_hash"]


async def test_logout_ends_the_session_for_good(admin_app: TestApp) -> None:
    browser = await signed_in(admin_app)
    async with browser:
        session_id = browser.session_id
        assert session_id is not None
        response = await browser.post("/admin/logout")
        assert response.status_code == 303
        login_page = await browser.follow(response)
        assert "You are logged out." in login_page.text

    async with AdminBrowser(admin_app) as replay:
        replay.client.cookies.set("nl_session", session_id, domain="127.0.0.1", path="/admin")
        assert (await replay.get("/admin")).status_code == 303
    assert await admin_app.pool.fetchval("SELECT count(*) FROM admin_sessions") == 0


async def test_a_form_posted_without_its_csrf_token_is_refused(admin_app: TestApp) -> None:
    browser = await signed_in(admin_app)
    other = await signed_in(admin_app)
    async with browser, other:
        missing = await browser.post("/admin/lists", {"slug": "weekly", "name": "Weekly"}, csrf=False)
        forged = await browser.post(
            "/admin/lists", {"slug": "weekly", "name": "Weekly", "csrf_token": "forged"}, csrf=False
        )
        # A token is bound to its session: one read from another session's page is worth nothing here.
        borrowed = await browser.post(
            "/admin/lists", {"slug": "weekly", "name": "Weekly", "csrf_token": await other.csrf()}, csrf=False
        )
        logout = await browser.post("/admin/logout", csrf=False)
        accepted = await browser.post("/admin/lists", {"slug": "weekly", "name": "Weekly"})

    assert missing.status_code == forged.status_code == borrowed.status_code == logout.status_code == 403
    assert "security token" in missing.text
    assert accepted.status_code == 303
    assert await admin_app.pool.fetchval("SELECT count(*) FROM lists WHERE slug = 'weekly'") == 1


async def test_the_login_form_needs_its_own_csrf_token(admin_app: TestApp) -> None:
    async with AdminBrowser(admin_app) as browser:
        await browser.get("/admin/login")
        response = await browser.client.post(
            "/admin/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
    assert response.status_code == 403
    assert await admin_app.pool.fetchval("SELECT count(*) FROM admin_sessions") == 0


@pytest.fixture
async def strict_app(database_url: str, smtp: SMTPServer) -> AsyncIterator[TestApp]:
    async with spawn_app(
        database_url, smtp, admin_login_email_limit=3, admin_login_ip_limit=5, admin_login_window_seconds=600
    ) as test_app:
        await create_admin(test_app)
        yield test_app


async def test_repeated_failures_for_one_account_are_throttled(strict_app: TestApp) -> None:
    async with AdminBrowser(strict_app) as browser:
        failures = [await browser.login(password=f"guess {n}") for n in range(3)]
        throttled = await browser.login()

    assert [response.status_code for response in failures] == [401, 401, 401]
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    assert "Too many login attempts" in throttled.text
    assert throttled.text.count("Too many login attempts") == 1
    assert await strict_app.pool.fetchval("SELECT count(*) FROM admin_sessions") == 0


async def test_one_network_address_trying_many_accounts_is_throttled(strict_app: TestApp) -> None:
    async with AdminBrowser(strict_app) as browser:
        statuses = [(await browser.login(email=f"guess{n}@example.com")).status_code for n in range(6)]
    assert statuses == [401] * 5 + [429]


async def test_changing_the_password(admin_app: TestApp) -> None:
    browser = await signed_in(admin_app)
    elsewhere = await signed_in(admin_app)
    async with browser, elsewhere:
        new = "a brand new passphrase"
        mismatch = await browser.post(
            "/admin/password",
            {"current_password": ADMIN_PASSWORD, "new_password": new, "confirm_password": new + "!"},
        )
        assert mismatch.status_code == 422
        assert "do not match" in mismatch.text
        wrong = await browser.post(
            "/admin/password",
            {"current_password": "not the password", "new_password": new, "confirm_password": new},
        )
        assert wrong.status_code == 422
        assert "current password is not right" in wrong.text
        short = await browser.post(
            "/admin/password",
            {"current_password": ADMIN_PASSWORD, "new_password": "short", "confirm_password": "short"},
        )
        assert short.status_code == 422
        # Nothing changed so far: the other session still works.
        assert (await elsewhere.get("/admin")).status_code == 200

        changed = await browser.post(
            "/admin/password",
            {"current_password": ADMIN_PASSWORD, "new_password": new, "confirm_password": new},
        )
        assert changed.status_code == 303
        assert "other sessions have ended" in (await browser.follow(changed)).text
        assert (await browser.get("/admin")).status_code == 200
        assert (await elsewhere.get("/admin")).status_code == 303

    async with AdminBrowser(admin_app) as fresh:
        assert (await fresh.login()).status_code == 401
        assert (await fresh.login(password=new)).status_code == 303


async def test_api_tokens_are_shown_once_and_can_be_revoked(admin_app: TestApp) -> None:
    browser = await signed_in(admin_app)
    async with browser:
        created = await browser.post("/admin/tokens", {"name": "CRM <sync>", "scope": "read"})
        assert created.status_code == 201
        token = re.search(r'id="new-token">([^<]+)<', created.text)
        assert token is not None
        assert "CRM &lt;sync&gt;" in created.text
        api = {"Authorization": f"Bearer {token[1]}"}
        assert (await admin_app.client.get("/api/v1/lists", headers=api)).status_code == 200

        listing = await browser.get("/admin/tokens")
        assert "CRM &lt;sync&gt;" in listing.text
        assert token[1] not in listing.text
        token_id = await admin_app.pool.fetchval("SELECT id FROM api_tokens WHERE name = 'CRM <sync>'")
        revoked = await browser.post(f"/admin/tokens/{token_id}/revoke")
        assert revoked.status_code == 303

    assert (await admin_app.client.get("/api/v1/lists", headers=api)).status_code == 401


async def test_users_create_from_the_command_line(database_url: str, smtp: SMTPServer) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "NEWSLETTER_LOG_FORMAT": "json"}
    run = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "newsletter",
        "users",
        "create",
        "--email",
        "Chief@Example.com",
        "--password-stdin",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await run.communicate(b"a long enough password\n")
    assert run.returncode == 0, err
    assert b"Created admin user" in out
    again = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "newsletter", "users", "create", "--email", "chief@example.com", "--password-stdin"),
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await again.communicate(b"another long password\n")
    assert again.returncode == 1
    assert b"exists already" in err

    async with spawn_app(database_url, smtp) as app, AdminBrowser(app) as browser:
        response = await browser.login(email="chief@example.com", password="a long enough password")
        assert response.status_code == 303
        stored = await app.pool.fetchval("SELECT password_hash FROM admin_users")
        assert stored.startswith("$argon2id$")


async def test_the_login_page_itself_has_a_csrf_token_and_a_policy(admin_app: TestApp) -> None:
    async with AdminBrowser(admin_app) as browser:
        page = await browser.get("/admin/login")
    assert csrf_of(page.text)
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def _login_again(browser: AdminBrowser, password: str = ADMIN_PASSWORD) -> int:
    """A new login from a browser that keeps its other cookies (the device cookie), its session gone."""
    browser.client.cookies.delete("nl_session", path="/admin")
    return (await browser.login(password=password)).status_code


async def test_only_failures_count_and_a_successful_login_is_never_counted(strict_app: TestApp) -> None:
    async with AdminBrowser(strict_app) as browser:
        logins = [await _login_again(browser) for _ in range(8)]
    assert logins == [303] * 8


async def test_wrong_passwords_from_elsewhere_never_keep_the_owner_out(strict_app: TestApp) -> None:
    """Another network address (X-Forwarded-For from the proxy the server trusts) guesses until it is refused;
    the owner, on their own address, and on a browser they logged in with before, still logs in."""
    async with AdminBrowser(strict_app) as known, AdminBrowser(strict_app) as owner:
        assert (await known.login()).status_code == 303  # this browser has logged in before
        attacker = AdminBrowser(strict_app)
        attacker.client.headers["X-Forwarded-For"] = "203.0.113.9"
        async with attacker:
            guesses = [(await attacker.login(password=f"guess {n}")).status_code for n in range(4)]
        from_another_address = await owner.login()
        again_from_known_browser = await _login_again(known)

    assert guesses == [401, 401, 401, 429]
    assert from_another_address.status_code == 303
    assert again_from_known_browser == 303


async def test_a_browser_that_logged_in_before_is_counted_on_its_own(strict_app: TestApp) -> None:
    """Same network address: the guesses of a stranger's browser lock that browser out, not the owner's."""
    async with AdminBrowser(strict_app) as known, AdminBrowser(strict_app) as stranger:
        assert (await known.login()).status_code == 303
        guesses = [(await stranger.login(password=f"guess {n}")).status_code for n in range(4)]
        refused_right_password = await stranger.login()
        owner = await _login_again(known)

    assert guesses == [401, 401, 401, 429]
    assert refused_right_password.status_code == 429
    assert owner == 303


async def test_a_redirect_never_leads_to_the_host_the_request_named(admin_app: TestApp) -> None:
    for path in ("/admin/", "/admin/lists/"):
        response = await admin_app.client.get(path, headers={"Host": "evil.example"})
        assert response.status_code in (303, 307), (path, response.status_code)
        assert response.headers["location"].startswith(admin_app.settings.base_url + "/admin"), (
            response.headers
        )
    assert (await admin_app.client.get("/no-such-page/")).status_code == 404
