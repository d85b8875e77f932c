"""The CLI as an operator runs it: real processes, real signals, the embedded database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from pgserver.utils import PostmasterInfo

from tests.harness import ReceivedEmail, SMTPServer, free_port

pytestmark = pytest.mark.asyncio


@contextmanager
def newsletter(*args: str, env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        assert process.stdout is not None
        process.stdout.close()


def base_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER_")}
    env.pop("DATABASE_URL", None)
    env.update({"NEWSLETTER_LOG_FORMAT": "json", **extra})
    return env


async def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, "the service exited during start-up"
            try:
                if (await client.get(f"{url}/health/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("the service did not become ready")


async def wait_for(condition, timeout: float = 30):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await condition()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("timed out waiting")


async def test_run_with_the_embedded_database_signup_confirm_restart(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env(NEWSLETTER_PORT=str(port), NEWSLETTER_BASE_URL=url)
    outbox = tmp_path / ".newsletter" / "outbox"

    with newsletter("run", env=env, cwd=tmp_path) as process:
        await wait_until_up(url, process)
        async with httpx.AsyncClient(base_url=url) as client:
            form = await client.get("/")
            assert 'action="/subscriptions"' in form.text
            signup = await client.post("/subscriptions", data={"email": "ada@example.com", "name": "Ada"})
            assert signup.status_code == 202

            async def one_email() -> list[Path]:
                return sorted(outbox.glob("*.eml"))

            [eml] = await wait_for(one_email)
            [link] = ReceivedEmail("", [], eml.read_bytes()).links("plain")
            assert link.startswith(f"{url}/subscriptions/confirm?token=")
            page = await client.get(link)
            assert page.status_code == 200
            token = link.split("token=")[1]
            confirmed = await client.post("/subscriptions/confirm", data={"token": token})
            assert confirmed.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0

    with newsletter("run", env=env, cwd=tmp_path) as process:
        await wait_until_up(url, process)
        async with httpx.AsyncClient(base_url=url) as client:
            again = await client.post("/subscriptions/confirm", data={"token": token})
            assert again.status_code == 200
            assert "You are subscribed" in again.text
            # Still confirmed after the restart: subscribing again sends no new email. The sign-up has
            # committed by its answer, so any email it queued is in the ledger now: there is only the first.
            assert (await client.post("/subscriptions", data={"email": "ada@example.com"})).status_code == 202
            embedded = PostmasterInfo.read_from_pgdata(tmp_path / ".newsletter" / "postgres")
            assert embedded is not None
            ledger = await asyncpg.connect(embedded.get_uri())
            try:
                emails = await ledger.fetch("SELECT recipient, kind, status FROM deliveries")
            finally:
                await ledger.close()
            assert [tuple(row) for row in emails] == [("ada@example.com", "confirmation", "sent")]
            assert len(list(outbox.glob("*.eml"))) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


async def _stalling_smtp_server() -> tuple[asyncio.Server, int]:
    """Accepts connections and never says a word, like an SMTP server that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_sigkill_after_signup_commits_and_before_the_email_is_sent(
    database_url: str, tmp_path: Path
) -> None:
    stalling, stalling_port = await _stalling_smtp_server()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env(
        DATABASE_URL=database_url,
        NEWSLETTER_PORT=str(port),
        NEWSLETTER_BASE_URL=url,
        NEWSLETTER_LEASE_SECONDS="3",
        NEWSLETTER_SMTP_TIMEOUT_SECONDS="120",
    )
    conn = await asyncpg.connect(database_url)
    try:
        with newsletter(
            "run", env={**env, "NEWSLETTER_EMAIL_URL": f"smtp://127.0.0.1:{stalling_port}"}, cwd=tmp_path
        ) as process:
            await wait_until_up(url, process)
            async with httpx.AsyncClient(base_url=url) as client:
                assert (
                    await client.post("/subscriptions", json={"email": "ada@example.com"})
                ).status_code == 202

            async def claimed() -> bool:
                return await conn.fetchval("SELECT status FROM deliveries") == "sending"

            await wait_for(claimed)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        stalling.close()

        smtp = SMTPServer()
        smtp.start()
        try:
            with newsletter("run", env={**env, "NEWSLETTER_EMAIL_URL": smtp.url}, cwd=tmp_path) as process:
                await wait_until_up(url, process)

                # Recorded as sent, the delivery can no longer be reclaimed: no copy can follow this one.
                async def recorded_as_sent() -> bool:
                    status: str = await conn.fetchval("SELECT status FROM deliveries")
                    return status == "sent"

                await wait_for(recorded_as_sent)
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=30) == 0
            assert len(smtp.to("ada@example.com")) == 1
            row = await conn.fetchrow("SELECT status, reclaimed FROM deliveries")
            assert (row["status"], row["reclaimed"]) == ("sent", 1)
        finally:
            smtp.stop()
    finally:
        await conn.close()


async def test_config_check_redacts_secrets(tmp_path: Path) -> None:
    env = base_env(
        DATABASE_URL="postgresql://app:hunter2-db@db.internal/news",
        NEWSLETTER_EMAIL_URL="smtp://mailer:hunter2-smtp@smtp.internal:587?tls=starttls",
        NEWSLETTER_SECRET_KEY="hunter2-secret-key-that-is-long-enough",
    )
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "config", "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert "smtp://mailer:***@smtp.internal:587?tls=starttls" in result.stdout
    assert "postgresql://app:***@db.internal/news" in result.stdout


async def test_production_mode_refuses_default_secrets_and_plain_http(tmp_path: Path) -> None:
    env = base_env(NEWSLETTER_ENV="production", NEWSLETTER_BASE_URL="http://news.example.com")
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "NEWSLETTER_SECRET_KEY" in result.stderr
    assert "https" in result.stderr
    assert "Traceback" not in result.stderr
