"""SQL injection strings in every text field and query parameter of the public pages and of the API: never a
5xx, stored exactly as given wherever they are accepted, and every table still there afterwards."""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.harness import AdminClient, SMTPServer, TestApp, add_confirmed, admin_client, spawn_app

pytestmark = pytest.mark.asyncio

PAYLOADS = [
    "'; DROP TABLE subscribers; --",
    "' OR '1'='1",
    "' OR 1=1 --",
    '" OR ""="',
    "'); DROP TABLE issues; --",
    "1; SELECT pg_sleep(10); --",
    "' UNION SELECT token_hash FROM api_tokens --",
    "$$; DROP TABLE lists; $$",
    "$1 $2 $$",
    "%s %(name)s {0} {}",
    "\\x00",
    "\\'; --",
    "*/ /* -- #",
    "%' OR email LIKE '%",
    "\u2019 OR \u20191\u2019=\u20191",  # typographic quotes
    "\u02bc; DROP TABLE subscribers; --",  # modifier letter apostrophe
    "\uff07 OR \uff071\uff07=\uff071",  # fullwidth apostrophe
    "Robert\u00e9 \U0001f600 \u0639\u0631\u0628\u064a",
    "\x00",
    "a\x00'; DROP TABLE subscribers; --",
    '"\'; DROP TABLE subscribers; --"@example.com',
    "x" * 10_000,
]
# Addresses that are valid and still carry SQL metacharacters in their local part.
EMAIL_PAYLOADS = [
    "o'reilly'--@example.com",
    "'or'1'='1@example.com",
    "x'||'1'='1@example.com",
    "$$@example.com",
    "%25'%25@example.com",
]
TABLES = (
    "subscribers", "subscriptions", "lists", "issues", "deliveries", "suppressions", "api_tokens",
    "confirmation_tokens", "rate_limits",
)  # fmt: skip


def _as_stored(text: str) -> str:
    """What the parsers keep of a name: surrounding spaces dropped, Unicode in NFC."""
    return unicodedata.normalize("NFC", text.strip())


@pytest.fixture
async def roomy_app(database_url: str, smtp: SMTPServer) -> AsyncIterator[TestApp]:
    """No rate limit gets in the way of the hundreds of requests these tests make from one address."""
    async with spawn_app(
        database_url,
        smtp,
        signup_ip_limit=1_000_000,
        signup_address_limit=1_000_000,
        token_guess_limit=1_000_000,
    ) as test_app:
        yield test_app


@pytest.fixture
async def admin(roomy_app: TestApp) -> AdminClient:
    return await admin_client(roomy_app)


class Answers:
    """Every answer of a run; a 5xx anywhere is a failure, collected so one run shows them all."""

    def __init__(self) -> None:
        self.server_errors: list[str] = []
        self.not_stored: list[str] = []
        self.read_back = 0

    def check(self, what: str, response: httpx.Response, payload: str) -> httpx.Response:
        if response.status_code >= 500:
            self.server_errors.append(
                f"{what} {payload[:40]!r}: {response.status_code} {response.text[:200]}"
            )
        return response

    def stored(self, what: str, payload: str, expected: object, found: object) -> None:
        self.read_back += 1
        if expected != found:
            self.not_stored.append(f"{what} {payload[:40]!r}: stored as {str(found)[:60]!r}")

    def assert_clean(self) -> None:
        # Most payloads are accepted somewhere: a run that read nothing back would prove nothing.
        assert self.read_back >= len(PAYLOADS), self.read_back
        assert not self.server_errors, "\n".join(self.server_errors)
        assert not self.not_stored, "\n".join(self.not_stored)


async def _tables_intact(app: TestApp) -> None:
    for table in TABLES:
        assert await app.pool.fetchval("SELECT to_regclass($1) IS NOT NULL", table), f"{table} is gone"
    assert await app.pool.fetchval("SELECT count(*) FROM lists WHERE slug = 'default'") == 1


async def test_the_public_sign_up_and_links(roomy_app: TestApp) -> None:
    app = roomy_app
    answers = Answers()
    for n, payload in enumerate(PAYLOADS):
        address = f"reader{n}@example.com"
        for send in (app.subscribe, app.subscribe_form):
            response = answers.check("sign-up name", await send(address, payload), payload)
            if response.status_code == 202:
                stored = await app.pool.fetchval("SELECT name FROM subscribers WHERE email = $1", address)
                answers.stored("sign-up name", payload, _as_stored(payload), stored)
            answers.check("sign-up email", await send(payload, "Ada"), payload)
            answers.check("sign-up list", await send(address, "Ada", list=payload), payload)
            answers.check("sign-up honeypot", await send(address, "Ada", website=payload), payload)
        answers.check(
            "confirm page", await app.client.get("/subscriptions/confirm", params={"token": payload}), payload
        )
        answers.check(
            "confirm", await app.client.post("/subscriptions/confirm", data={"token": payload}), payload
        )
        answers.check(
            "resend", await app.client.post("/subscriptions/confirm/resend", data={"token": payload}), payload
        )
        path = f"/unsubscribe/{quote(payload, safe='')}"
        answers.check("unsubscribe page", await app.client.get(path), payload)
        answers.check("unsubscribe", await app.client.post(path, data={"scope": payload}), payload)
        answers.check("sign-up page", await app.client.get("/", params={"list": payload}), payload)
    for payload in EMAIL_PAYLOADS:
        response = answers.check("sign-up email", await app.subscribe(payload, "Ada"), payload)
        assert response.status_code == 202, (payload, response.text)
        stored = await app.pool.fetchval("SELECT email FROM subscribers WHERE email = $1", payload)
        answers.stored("sign-up email", payload, payload, stored)

    answers.assert_clean()
    await _tables_intact(app)
    assert await app.pool.fetchval("SELECT count(*) FROM subscriptions WHERE status = 'confirmed'") == 0


async def test_lists_subscribers_and_suppressions_over_the_api(
    roomy_app: TestApp, admin: AdminClient
) -> None:
    app = roomy_app
    answers = Answers()
    await add_confirmed(app.pool, 3)
    for n, payload in enumerate(PAYLOADS):
        answers.check("list slug", await admin.post("/lists", {"slug": payload, "name": "x"}), payload)
        created = answers.check(
            "list name",
            await admin.post("/lists", {"slug": f"l{n}", "name": payload, "description": payload}),
            payload,
        )
        if created.status_code == 201:
            found = (await admin.get(f"/lists/{created.json()['id']}")).json()
            answers.stored("list name", payload, _as_stored(payload), found["name"])
            answers.stored("list description", payload, payload, found["description"])
            patched = answers.check(
                "list patch",
                await admin.patch(
                    f"/lists/{created.json()['id']}", {"name": payload, "description": payload}
                ),
                payload,
            )
            assert patched.status_code == 200, patched.text

        address = f"person{n}@example.com"
        body: dict[str, Any] = {
            "email": address,
            "name": payload,
            "attributes": {payload: payload, "k": [payload]},
        }
        person = answers.check("subscriber", await admin.post("/subscribers", body), payload)
        if person.status_code == 201:
            found = (await admin.get(f"/subscribers/{person.json()['id']}")).json()
            answers.stored("subscriber name", payload, _as_stored(payload), found["name"])
            answers.stored("subscriber attributes", payload, body["attributes"], found["attributes"])
            answers.check(
                "subscriber patch",
                await admin.patch(
                    f"/subscribers/{person.json()['id']}", {"name": payload, "attributes": {"a": payload}}
                ),
                payload,
            )
        answers.check("subscriber email", await admin.post("/subscribers", {"email": payload}), payload)
        answers.check(
            "subscriber lists",
            await admin.post("/subscribers", {"email": address, "lists": [payload]}),
            payload,
        )
        for params in ({"search": payload}, {"list": payload}, {"status": payload}, {"cursor": payload}):
            answers.check(f"subscribers {params}", await admin.get("/subscribers", **params), payload)

        answers.check("suppression email", await admin.post("/suppressions", {"email": payload}), payload)
        suppressed = answers.check(
            "suppression detail",
            await admin.post("/suppressions", {"email": f"s{n}@example.com", "detail": payload}),
            payload,
        )
        if suppressed.status_code == 201:
            stored = await app.pool.fetchval(
                "SELECT detail FROM suppressions WHERE email = $1", f"s{n}@example.com"
            )
            answers.stored("suppression detail", payload, _as_stored(payload), stored)
        for params in ({"search": payload}, {"reason": payload}, {"cursor": payload}):
            answers.check(f"suppressions {params}", await admin.get("/suppressions", **params), payload)
        answers.check(
            "lift suppression", await admin.delete(f"/suppressions/{quote(payload, safe='')}"), payload
        )
    for payload in EMAIL_PAYLOADS:
        person = answers.check(
            "subscriber email", await admin.post("/subscribers", {"email": payload}), payload
        )
        assert person.status_code == 201, (payload, person.text)
        answers.stored("subscriber email", payload, payload, person.json()["email"])
        listed = (await admin.get("/subscribers", search=payload)).json()["items"]
        answers.stored("subscriber search", payload, [payload], [item["email"] for item in listed])
        suppressed = answers.check(
            "suppression email", await admin.post("/suppressions", {"email": payload}), payload
        )
        assert suppressed.status_code == 201, suppressed.text
        lifted = await admin.delete(f"/suppressions/{quote(payload, safe='')}")
        assert lifted.status_code == 204, (payload, lifted.text)

    answers.assert_clean()
    await _tables_intact(app)
    assert await app.pool.fetchval("SELECT count(*) FROM subscribers WHERE email LIKE 'reader%'") == 3


async def test_issues_and_their_ledger_over_the_api(roomy_app: TestApp, admin: AdminClient) -> None:
    app = roomy_app
    answers = Answers()
    for payload in PAYLOADS:
        markdown = answers.check(
            "issue markdown", await admin.post("/issues", {"subject": payload, "markdown": payload}), payload
        )
        if markdown.status_code == 201:
            found = (await admin.get(f"/issues/{markdown.json()['id']}")).json()
            answers.stored("issue subject", payload, payload.strip(), found["subject"])
            answers.stored("issue markdown", payload, payload, found["markdown"])
        body = {"subject": f"S {payload}"[:500], "html": payload, "text": payload}
        html = answers.check("issue html", await admin.post("/issues", body), payload)
        if html.status_code == 201:
            issue_id = html.json()["id"]
            found = (await admin.get(f"/issues/{issue_id}")).json()
            answers.stored("issue html", payload, payload, found["html"])
            answers.stored("issue text", payload, payload, found["text"])
            answers.check(
                "issue patch", await app.client.patch(
                    f"/api/v1/issues/{issue_id}", json={**body, "subject": payload}, headers=admin.headers
                ), payload,
            )  # fmt: skip
            for params in ({"status": payload}, {"cursor": payload}):
                answers.check(
                    f"deliveries {params}",
                    await admin.get(f"/issues/{issue_id}/deliveries", **params),
                    payload,
                )
            answers.check(
                "test send", await admin.post(f"/issues/{issue_id}/test", {"addresses": [payload]}), payload
            )
            answers.check(
                "send_at", await admin.post(f"/issues/{issue_id}/send", {"send_at": payload}), payload
            )
        answers.check(
            "issue lists",
            await admin.post("/issues", {"subject": "x", "markdown": "x", "lists": [payload]}),
            payload,
        )
        for params in ({"status": payload}, {"cursor": payload}):
            answers.check(f"issues {params}", await admin.get("/issues", **params), payload)
        if payload.isascii() and payload.isprintable():  # what an HTTP header can carry
            answers.check(
                "idempotency key",
                await admin.post("/issues", {"subject": "k", "markdown": "k"}, key=payload),
                payload,
            )

    answers.assert_clean()
    await _tables_intact(app)
