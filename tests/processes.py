"""Worker processes as an operator runs them, and the issue they send: shared by the acceptance and resilience
tests."""

from __future__ import annotations

import asyncio
import re
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

PG_CTL_WAIT_SECONDS = 120  # generous, for a machine shared with other work
ATTEMPTS = 3  # of restarting PostgreSQL


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
    from newsletter.db.database import Database
    from newsletter.services.sending.issues import IssueContent, create_issue, send_issue

    db = Database.on(conn)
    async with db.transaction():
        issue = await create_issue(db, IssueContent.parse("Crash test", "Hello", None, None), ["default"])
        await send_issue(db, issue["id"], None, None)
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


async def in_flight_now(conn: asyncpg.Connection, issue_id: int) -> set[int]:
    """The deliveries claimed and not yet settled: what a worker killed now would have in flight."""
    rows = await conn.fetch("SELECT id FROM deliveries WHERE issue_id = $1 AND status = 'sending'", issue_id)
    return {row["id"] for row in rows}


def stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(signum)
    return process.wait(timeout=60)


def copies(smtp: SMTPServer) -> Counter[str]:
    return Counter(address for message in list(smtp.received) for address in message.recipients)


@asynccontextmanager
async def postgresql_of_its_own(directory: Path) -> AsyncIterator[tuple[str, Any]]:
    """A migrated PostgreSQL server for one test alone, so that restarting it disturbs nothing else; yields
    its URL and the handle `restart_postgresql` takes. Whatever server runs in its data directory at the end
    is stopped, and the test fails if a process of it is left."""
    url, server = start_embedded(directory)
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield url, server
    finally:
        # By data directory, not by the handle: the handle knows only the server process it started itself,
        # not one a restart put in its place. Immediate mode: the data is of no use afterwards.
        running = (server.pgdata / "postmaster.pid").exists()
        wait_until_stopped(server, [pg_ctl(server, "stop", "-m", "immediate", "-w")] if running else [])
        stop_embedded(server)


def saw_outage(log: str) -> bool:
    """Whether worker logs show a database outage. A lane with a statement in flight logs it; one that was
    sending meanwhile only meets connections that the pool has already replaced, and the pool logs its own
    attempts to reconnect."""
    signs = ("database unavailable", "cannot record outcomes yet", "Failed to restore the pool connection")
    return any(sign in log for sign in signs)


def restart_postgresql(server: Any) -> None:
    """Restart the server as an operator would: stop it in fast mode (every connection is dropped), wait until
    it is gone, and start it again on the same socket, a few times if need be; a failure shows what pg_ctl
    said and the server log. (`pg_ctl restart` would send the new server's log to its own output.)"""
    socket_dir = server.get_postmaster_info().socket_dir
    runs: list[subprocess.CompletedProcess[str]] = []
    stop_mode = "fast"
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(1)  # a busy machine gets a moment before the next try
        if (server.pgdata / "postmaster.pid").exists():
            runs.append(pg_ctl(server, "stop", "-m", stop_mode, "-w", "-t", str(PG_CTL_WAIT_SECONDS)))
            if runs[-1].returncode != 0:
                continue
        wait_until_stopped(server, runs)
        runs.append(
            pg_ctl(
                server,
                "start",
                "-w",
                "-t",
                str(PG_CTL_WAIT_SECONDS),
                "-l",
                str(server.log),
                # The options pgserver started it with: no TCP port, the socket where the URL points.
                "-o",
                '-h ""',
                "-o",
                f"-k {socket_dir}",
            )
        )
        if runs[-1].returncode == 0:
            return
        # A start that failed or timed out may have left a server behind, of no use: cleared away at once.
        stop_mode = "immediate"
    raise AssertionError(failure(server, runs))


def pg_ctl(server: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """pg_ctl on the server's data directory, as the system user that owns it; the output is kept to explain
    a failure."""
    from pgserver._commands import POSTGRES_BIN_PATH

    if server.system_user is not None:
        from pgserver.utils import ensure_prefix_permissions

        # pgserver let that user (the tests run as root, which PostgreSQL refuses) reach the data directory
        # when it started the server; but any pytest session starting since has closed /tmp/pytest-of-root
        # again (mode 700), and pg_ctl would fail with "could not access directory".
        ensure_prefix_permissions(server.pgdata)
    return subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server.pgdata), *args],
        user=server.system_user,
        capture_output=True,
        text=True,
        timeout=PG_CTL_WAIT_SECONDS + 30,
        check=False,
    )


def postgresql_processes(pgdata: Path) -> str:
    """The processes (`pid command line`, one a line) that name `pgdata`: a postmaster running in it."""
    found = subprocess.run(["pgrep", "-a", "-f", re.escape(str(pgdata))], capture_output=True, text=True)
    return found.stdout.strip()


def wait_until_stopped(server: Any, runs: list[subprocess.CompletedProcess[str]]) -> None:
    """Wait until no server runs in the data directory: its lock file is gone, and every process of it."""
    deadline = time.monotonic() + PG_CTL_WAIT_SECONDS
    while (left := postgresql_processes(server.pgdata)) or (server.pgdata / "postmaster.pid").exists():
        assert time.monotonic() < deadline, (
            f"PostgreSQL still runs in {server.pgdata}:\n{left}\n{failure(server, runs)}"
        )
        time.sleep(0.1)


def failure(server: Any, runs: list[subprocess.CompletedProcess[str]]) -> str:
    """Every pg_ctl run with its exit code and output, and the end of the server log."""
    lines = [f"$ {' '.join(run.args)} -> {run.returncode}\n{run.stdout}{run.stderr}" for run in runs]
    log = server.log.read_text(errors="replace").splitlines()[-60:] if server.log.exists() else ["(no log)"]
    return "\n".join([*lines, f"server log {server.log}, last lines:", *log])
