"""Worker processes as an operator runs them, and the issue they send: shared by the acceptance and resilience
tests."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from newsletter.db.embedded import start_embedded, stop_embedded
from newsletter.db.migrations import migrate
from tests.acceptance.test_cli import base_env
from tests.harness import SMTPServer


class MailServer(Protocol):
    """Anything a worker can send to: an SMTP server, a stand-in for an email API."""

    @property
    def url(self) -> str: ...


def start_worker(database_url: str, mail: MailServer, log: Path, **settings: str) -> subprocess.Popen[bytes]:
    """`newsletter worker` as a process of its own, sending to `mail`; its output is appended to `log`."""
    env = base_env(DATABASE_URL=database_url, NEWSLETTER_EMAIL_URL=mail.url, **settings)
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "worker"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def send_issue(conn: asyncpg.Connection) -> int:
    """Create an issue to the default list and start sending it, as the API does."""
    from newsletter.services.issues import IssueContent, create_issue, send_issue

    async with conn.transaction():
        issue = await create_issue(conn, IssueContent.parse("Crash test", "Hello", None, None), ["default"])
        await send_issue(conn, issue["id"], None, None)
    issue_id: int = issue["id"]
    return issue_id


async def wait_for_status(conn: asyncpg.Connection, issue_id: int, status: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await conn.fetchval("SELECT status FROM issues WHERE id = $1", issue_id) == status:
            return
        await asyncio.sleep(0.2)
    counts = await conn.fetch("SELECT status, count(*) FROM deliveries GROUP BY status")
    raise AssertionError(f"issue {issue_id} did not become {status}: {[tuple(row) for row in counts]}")


async def wait_for_sent(conn: asyncpg.Connection, issue_id: int, at_least: int) -> None:
    while await conn.fetchval("SELECT sent_count FROM issues WHERE id = $1", issue_id) < at_least:
        await asyncio.sleep(0.05)


def stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(signum)
    return process.wait(timeout=60)


def copies(smtp: SMTPServer) -> Counter[str]:
    return Counter(address for message in list(smtp.received) for address in message.recipients)


@asynccontextmanager
async def postgresql_of_its_own(directory: Path) -> AsyncIterator[tuple[str, Any]]:
    """A migrated PostgreSQL server for one test alone, so that restarting it disturbs nothing else; yields
    its URL and the handle `restart_postgresql` takes."""
    url, server = start_embedded(directory)
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield url, server
    finally:
        stop_embedded(server)


def saw_outage(log: str) -> bool:
    """Whether worker logs show a database outage. A lane with a statement in flight logs it; one that was
    sending meanwhile only meets connections that the pool has already replaced, and the pool logs its own
    attempts to reconnect."""
    signs = ("database unavailable", "cannot record outcomes yet", "Failed to restore the pool connection")
    return any(sign in log for sign in signs)


def restart_postgresql(server: Any) -> None:
    """Restart the server as an operator would (`pg_ctl restart`, fast mode: every connection is dropped)."""
    from pgserver._commands import pg_ctl

    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user)
