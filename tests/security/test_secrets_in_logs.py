"""Secrets never reach the logs: the service runs as an operator runs it, with every secret set to a value of
its own, is used (and misused) the way people use it, and its whole output is searched for each value."""

from __future__ import annotations

import asyncio
import base64
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.acceptance.test_cli import base_env, newsletter, wait_for, wait_until_up
from tests.admin import csrf_of
from tests.harness import SMTPHandler, TestApp, add_confirmed, admin_client, free_port, with_database

pytestmark = pytest.mark.asyncio


def _secret(kind: str) -> str:
    """A value that cannot turn up in a log by chance, and needs no escaping in JSON or in a URL."""
    return f"{kind}-{secrets.token_hex(12)}"


@dataclass
class RefusingAuthenticator:
    """An SMTP server that refuses the right credentials until told otherwise, so the failure is logged."""

    login: bytes
    password: bytes
    refusing: bool = True
    refused: int = 0

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        right = isinstance(data, LoginPassword) and (data.login, data.password) == (self.login, self.password)
        if self.refusing or not right:
            self.refused += 1
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True)


@pytest.fixture
async def owned_database(postgres_url: str) -> AsyncIterator[tuple[str, str]]:
    """An empty database owned by a role of its own with a password; yields (URL with the password, password).

    Under trust authentication the password is not checked, but it travels in DATABASE_URL as in production.
    """
    suffix = secrets.token_hex(6)
    role, password, name = f"nl_security_{suffix}", _secret("dbpass"), f"newsletter_security_{suffix}"
    admin = await asyncpg.connect(with_database(postgres_url, "postgres"))
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await admin.execute(f"CREATE DATABASE {name} OWNER {role}")
        parts = urlsplit(with_database(postgres_url, name))
        host = parts.netloc.rsplit("@", 1)[-1]
        yield parts._replace(netloc=f"{role}:{password}@{host}").geturl(), password
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


def _cli(
    *args: str, env: dict[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_no_secret_reaches_the_output_of_the_service_or_of_the_cli(
    owned_database: tuple[str, str], tmp_path: Path
) -> None:
    database_url, database_password = owned_database
    smtp_password, hook_password = _secret("smtppass"), _secret("hookpass")
    admin_password, wrong_password = _secret("adminpass"), _secret("wrongpass")
    port, smtp_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env(
        DATABASE_URL=database_url,
        NEWSLETTER_SECRET_KEY=_secret("secretkey") + "-long-enough-for-production",
        NEWSLETTER_EMAIL_URL=f"smtp://mailer:{smtp_password}@127.0.0.1:{smtp_port}",
        NEWSLETTER_POSTMARK_WEBHOOK_USER="hooks",
        NEWSLETTER_POSTMARK_WEBHOOK_PASSWORD=hook_password,
        NEWSLETTER_PORT=str(port),
        NEWSLETTER_BASE_URL=url,
        NEWSLETTER_LOG_LEVEL="debug",
        NEWSLETTER_RETRY_BASE_SECONDS="0.2",
        NEWSLETTER_RETRY_MAX_SECONDS="0.5",
        NEWSLETTER_POLL_INTERVAL_SECONDS="0.2",
    )
    outputs: list[str] = []

    _cli("migrate", env=env, cwd=tmp_path)
    created = _cli("tokens", "create", "--name", "security review", env=env, cwd=tmp_path)
    api_token = created.stdout.strip().splitlines()[-1]
    outputs.append(created.stderr)  # stdout shows the token once, on purpose
    user = _cli(
        "users", "create", "--email", "chief@example.com", "--password-stdin",
        env=env, cwd=tmp_path, stdin=admin_password + "\n",
    )  # fmt: skip
    check = _cli("config", "check", env=env, cwd=tmp_path)
    outputs += [user.stdout, user.stderr, check.stdout, check.stderr]

    authenticator = RefusingAuthenticator(b"mailer", smtp_password.encode())
    handler = SMTPHandler()
    smtp = Controller(
        handler, hostname="127.0.0.1", port=smtp_port,
        authenticator=authenticator, auth_required=True, auth_require_tls=False,
    )  # fmt: skip
    smtp.start()
    seen: dict[str, str] = {}
    log_path = tmp_path / "service.log"
    try:
        with log_path.open("wb") as log, newsletter("run", env=env, cwd=tmp_path) as process:
            assert process.stdout is not None
            reader = asyncio.create_task(_copy(process.stdout, log))
            await wait_until_up(url, process)
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                seen = await _use_everything(client, handler, authenticator, api_token)
                seen["the admin password tried"] = wrong_password
                await _admin_login(client, admin_password, wrong_password, seen)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
            await reader
    finally:
        smtp.stop()
    output = log_path.read_text() + "\n".join(outputs)

    assert '"event": "request"' in output, "the service logged nothing: the check would prove nothing"
    assert authenticator.refused > 0 and "535" in output, "the refused SMTP login was not logged"
    basic = base64.b64encode(f"hooks:{hook_password}".encode()).decode()
    plain_auth = base64.b64encode(f"\0mailer\0{smtp_password}".encode()).decode()
    every_secret = {
        **seen,
        "NEWSLETTER_SECRET_KEY": env["NEWSLETTER_SECRET_KEY"],
        "the database password": database_password,
        "the SMTP password": smtp_password,
        "the SMTP AUTH PLAIN string": plain_auth,
        "the SMTP password as AUTH LOGIN sends it": base64.b64encode(smtp_password.encode()).decode(),
        "the Postmark webhook password": hook_password,
        "the Postmark Authorization header": basic,
        "the API token": api_token,
        "the admin password": admin_password,
    }
    leaked = {name for name, value in every_secret.items() if value in output}
    assert not leaked, f"found in the logs: {sorted(leaked)}"


async def _copy(stream: Any, log: Any) -> None:
    """The process's output, copied as it comes (a full pipe would stall the service)."""
    while chunk := await asyncio.to_thread(stream.read1, 65536):
        log.write(chunk)
        log.flush()


async def _use_everything(
    client: httpx.AsyncClient, handler: SMTPHandler, authenticator: RefusingAuthenticator, api_token: str
) -> dict[str, str]:
    """Sign-up, confirmation, a newsletter, unsubscribing, the API and a webhook; returns the secrets seen."""
    seen: dict[str, str] = {}
    assert (await client.post("/subscriptions", json={"email": "early@example.com"})).status_code == 202

    async def refused_once() -> bool:
        return authenticator.refused > 0

    await wait_for(refused_once)
    authenticator.refusing = False

    assert (
        await client.post("/subscriptions", data={"email": "ada@example.com", "name": "Ada"})
    ).status_code == 202

    async def confirmation() -> list[str]:
        return [
            link
            for item in handler.received
            if "ada@example.com" in item.recipients
            for link in item.links("plain")
            if "token=" in link
        ]

    [link] = await wait_for(confirmation)
    token = link.split("token=", 1)[1]
    seen["the confirmation token"] = token
    assert (await client.get(link)).status_code == 200
    assert (await client.post("/subscriptions/confirm", data={"token": token})).status_code == 200
    assert (await client.post("/subscriptions/confirm", data={"token": "B" * 43})).status_code == 404

    api = {"Authorization": f"Bearer {api_token}"}
    wrong_token = _secret("wrongtoken")
    seen["an API token that is not right"] = wrong_token
    assert (await client.get("/api/v1/lists", headers=api)).status_code == 200
    assert (
        await client.get("/api/v1/lists", headers={"Authorization": f"Bearer {wrong_token}"})
    ).status_code == 401
    issue = await client.post("/api/v1/issues", json={"subject": "News", "markdown": "Hello"}, headers=api)
    assert issue.status_code == 201, issue.text
    sent = await client.post(f"/api/v1/issues/{issue.json()['id']}/send", headers=api)
    assert sent.status_code == 202

    async def newsletter_copy() -> list[str]:
        return [
            str(item.message["List-Unsubscribe"])[1:-1]
            for item in handler.received
            if "ada@example.com" in item.recipients and item.message["List-Unsubscribe"]
        ]

    [unsubscribe] = await wait_for(newsletter_copy)
    seen["the unsubscribe token"] = unsubscribe.rsplit("/", 1)[-1]
    assert (await client.get(unsubscribe)).status_code == 200
    assert (await client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})).status_code == 200

    record = {"RecordType": "Delivery", "MessageID": "x", "Recipient": "ada@example.com"}
    wrong_hook = _secret("wronghook")
    seen["a webhook password that is not right"] = wrong_hook
    refused = await client.post("/webhooks/postmark", json=record, auth=("hooks", wrong_hook))
    assert refused.status_code == 401
    return seen


async def _admin_login(
    client: httpx.AsyncClient, password: str, wrong_password: str, seen: dict[str, str]
) -> None:
    for attempt in (wrong_password, password):
        page = await client.get("/admin/login")
        fields = {"csrf_token": csrf_of(page.text), "email": "chief@example.com", "password": attempt}
        await client.post("/admin/login", data=fields)
    session = client.cookies.get("nl_session", path="/admin")
    assert session, "the login did not succeed"
    seen["the admin session id"] = session
    assert (await client.get("/admin")).status_code == 200


async def test_the_logs_of_a_test_session_hold_none_of_its_secrets(
    app: TestApp, capfd: pytest.CaptureFixture[str]
) -> None:
    """The same search, in process: whatever the application logs while the tests drive it."""
    [reader] = await add_confirmed(app.pool, 1)
    admin = await admin_client(app)
    assert (await app.subscribe("ada@example.com")).status_code == 202
    await app.dispatch_all_pending()
    [link] = app.confirmation_links("ada@example.com")
    confirmation = app.token_of(link)
    assert (await app.client.get(link)).status_code == 200
    assert (await app.confirm(link)).status_code == 200
    issue = await admin.post("/issues", {"subject": "News", "markdown": "Hello"})
    await admin.post(f"/issues/{issue.json()['id']}/send")
    await app.dispatch_all_pending()
    unsubscribe = str(app.smtp.to(reader)[-1].message["List-Unsubscribe"])[1:-1]
    assert (await app.client.get(unsubscribe)).status_code == 200
    assert (await app.client.post(unsubscribe)).status_code == 200

    captured = capfd.readouterr()
    output = captured.out + captured.err
    assert "/unsubscribe/{token}" in output, "the request log was not captured: the check would prove nothing"
    every_secret = {
        "the secret key": app.settings.resolved_secret_key(),
        "the API token": admin.headers["Authorization"].removeprefix("Bearer "),
        "the confirmation token": confirmation,
        "the unsubscribe token": unsubscribe.rsplit("/", 1)[-1],
    }
    leaked = {name for name, value in every_secret.items() if value in output}
    assert not leaked, f"found in the logs: {sorted(leaked)}"


async def test_no_address_reaches_the_request_log(app: TestApp, capfd: pytest.CaptureFixture[str]) -> None:
    """Erasure cannot reach log lines: a path that holds an address is logged as its route."""
    admin = await admin_client(app)
    address = "logged.nowhere@example.com"
    assert (await admin.post("/suppressions", {"email": address})).status_code == 201
    assert (await admin.get(f"/suppressions/{address}")).status_code in (404, 405)
    assert (await admin.delete(f"/suppressions/{address}")).status_code == 204
    assert (await app.client.get(f"/no/such/{address}")).status_code == 404

    captured = capfd.readouterr()
    output = captured.out + captured.err
    assert "/api/v1/suppressions/{email}" in output, "the request log was not captured"
    assert address not in output
    assert address.replace("@", "%40") not in output
