"""Hostile or broken input: clear 4xx answers, never a 500, nothing stored, no header injected."""

from __future__ import annotations

import pytest

from tests.harness import SMTPServer, TestApp, spawn_app

pytestmark = pytest.mark.asyncio


async def test_a_name_with_cr_lf_cannot_add_a_header(app: TestApp) -> None:
    response = await app.subscribe("ada@example.com", "Ada\r\nBcc: victim@example.com")

    assert response.status_code == 422
    await app.dispatch_all_pending()
    assert app.smtp.received == []


async def test_the_confirmation_email_carries_nothing_a_stranger_typed(app: TestApp) -> None:
    await app.subscribe("ada@example.com", "Click http://evil.example now")
    await app.dispatch_all_pending()

    [received] = app.smtp.to("ada@example.com")
    assert "evil" not in received.raw.decode()
    assert received.recipients == ["ada@example.com"]


async def test_an_email_address_with_cr_lf_is_rejected(app: TestApp) -> None:
    response = await app.subscribe("ada@example.com\r\nBcc: victim@example.com")

    assert response.status_code == 422


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
async def test_a_1_mb_body_gets_413(app: TestApp, content_type: str) -> None:
    response = await app.client.post(
        "/subscriptions", content=b"a" * (1024 * 1024), headers={"Content-Type": content_type}
    )

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_1_mb_body_without_content_length_gets_413(app: TestApp) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(16):
            yield b"a" * 65536

    response = await app.client.post(
        "/subscriptions", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"email": "\xff\xfe@example.com"}'),
        ("application/x-www-form-urlencoded", b"email=%FF%FE%40example.com"),
        ("application/x-www-form-urlencoded", b"email=\xff@example.com"),
        ("application/json", b"{not json"),
        ("application/json", b"[1, 2, 3]"),
        ("text/plain", b"email=ada@example.com"),
        ("", b""),
    ],
)
async def test_unreadable_bodies_get_a_4xx_problem(app: TestApp, content_type: str, body: bytes) -> None:
    response = await app.client.post("/subscriptions", content=body, headers={"Content-Type": content_type})

    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/problem+json"
    assert await app.pool.fetchval("SELECT count(*) FROM subscribers") == 0


async def test_multipart_forms_are_accepted_but_files_are_not(app: TestApp) -> None:
    ok = await app.client.post("/subscriptions", files={"email": (None, "multi@example.com")})
    with_file = await app.client.post("/subscriptions", files={"email": ("x.txt", b"a@b.c", "text/plain")})

    assert ok.status_code == 202
    assert with_file.status_code == 400


async def test_signups_beyond_the_per_address_limit_get_429_with_retry_after(
    database_url: str, smtp: SMTPServer
) -> None:
    async with spawn_app(database_url, smtp, signup_address_limit=3) as app:
        statuses = [(await app.subscribe("target@example.com")).status_code for _ in range(5)]
        other = await app.subscribe("other@example.com")
        limited = await app.subscribe("target@example.com")

        assert statuses == [202, 202, 202, 429, 429]
        assert other.status_code == 202
        assert int(limited.headers["retry-after"]) > 0
        assert limited.headers["content-type"] == "application/problem+json"
        await app.dispatch_all_pending()
        assert len(smtp.to("target@example.com")) == 3


async def test_signups_beyond_the_per_ip_limit_get_429_with_retry_after(
    database_url: str, smtp: SMTPServer
) -> None:
    async with spawn_app(database_url, smtp, signup_ip_limit=4, signup_ip_window_seconds=600) as app:
        statuses = [(await app.subscribe(f"person{n}@example.com")).status_code for n in range(6)]
        form = await app.subscribe_form("formperson@example.com")
        elsewhere = await app.client.post(
            "/subscriptions", json={"email": "far@example.com"}, headers={"X-Forwarded-For": "203.0.113.9"}
        )

        assert statuses == [202, 202, 202, 202, 429, 429]
        assert form.status_code == 429
        assert 0 < int(form.headers["retry-after"]) <= 600
        assert elsewhere.status_code == 202


async def test_the_limits_hold_across_processes_because_they_live_in_the_database(
    database_url: str, smtp: SMTPServer
) -> None:
    async with (
        spawn_app(database_url, smtp, signup_address_limit=2) as first,
        spawn_app(database_url, smtp, signup_address_limit=2) as second,
    ):
        answers = [
            (await first.subscribe("shared@example.com")).status_code,
            (await second.subscribe("shared@example.com")).status_code,
            (await first.subscribe("shared@example.com")).status_code,
        ]

    assert answers == [202, 202, 429]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/subscriptions", 400),
        # Token endpoints read an unreadable body as a wrong token, as any other unreadable body.
        ("/subscriptions/confirm", 404),
        ("/subscriptions/confirm/resend", 404),
        ("/unsubscribe/" + "A" * 43, 404),
    ],
)
async def test_json_nested_too_deep_to_parse_is_a_clear_answer_not_a_500(
    app: TestApp, path: str, status: int, capfd: pytest.CaptureFixture[str]
) -> None:
    response = await app.client.post(path, content=b"[" * 5000, headers={"Content-Type": "application/json"})

    assert response.status_code == status
    output = "".join(capfd.readouterr())
    assert "Traceback" not in output and "RecursionError" not in output


async def test_the_per_address_limit_counts_a_mailbox_whatever_its_tags(database_url: str) -> None:
    smtp = SMTPServer()
    smtp.start()
    try:
        async with spawn_app(database_url, smtp, signup_address_limit=5, signup_ip_limit=1000) as app:
            answers = [(await app.subscribe(f"target+{n}@example.com")).status_code for n in range(40)]
            other = await app.subscribe("someone.else@example.com")
            await app.dispatch_all_pending()
            confirmations = [m for m in smtp.received if m.recipients[0].startswith("target+")]
    finally:
        smtp.stop()

    assert answers == [202] * 5 + [429] * 35
    assert other.status_code == 202
    assert len(confirmations) == 5


async def test_a_local_part_longer_than_64_characters_is_refused(app: TestApp) -> None:
    too_long = await app.subscribe("a" * 65 + "@example.com")
    longest = await app.subscribe("a" * 64 + "@example.com")

    assert too_long.status_code == 422
    assert "email" in [error["field"] for error in too_long.json()["errors"]]
    assert longest.status_code == 202
