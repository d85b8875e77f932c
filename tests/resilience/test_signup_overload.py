"""The sign-up form under more load than the service can serve, for a minute.

    .venv/bin/pytest tests/resilience -s        # the whole matrix, figures printed

`newsletter run` (HTTP server and delivery worker in one process, as a small install runs it) against 200
clients that each post a new address as soon as their previous answer arrives, each on a new connection, as
sign-ups from many browsers arrive. (A kept-alive connection would race the server's idle timeout whenever
this busy load generator takes a few seconds to send its next request: a closed connection that says nothing
about the service.) The sign-up limit per network address is raised out of the way (every client is
127.0.0.1), so that the load reaches the database rather than the limiter: a 429 fails the run, as does a run
that accepted too few sign-ups to have loaded anything.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.acceptance.test_cli import base_env, wait_until_up
from tests.harness import free_port
from tests.processes import stop
from tests.resilience.measure import Figures

pytestmark = [pytest.mark.asyncio, pytest.mark.resilience]

CLIENTS = 200
LOAD_SECONDS = 60
# The fewest sign-ups a run accepts. 2 cores accepted 15,090 beside light work and 8,726 beside a test suite
# and two busy loops.
MIN_ACCEPTED = 3000
DRAIN_TIMEOUT = 600  # seconds; generous, for a machine shared with other work


class Load:
    """What the clients asked and what they were answered, by address (each address is asked once)."""

    def __init__(self) -> None:
        self.answers: dict[str, int] = {}
        self.failures: dict[str, str] = {}
        self.latencies: list[float] = []
        self.lag = 0.0  # how far behind this process's event loop fell: the load generator is busy too

    async def watch_lag(self, until: float) -> None:
        while time.monotonic() < until:
            planned = time.monotonic() + 0.1
            await asyncio.sleep(0.1)
            self.lag = max(self.lag, time.monotonic() - planned)

    async def client(self, http: httpx.AsyncClient, number: int, until: float) -> None:
        sent = 0
        while time.monotonic() < until:
            address = f"load{number}.{sent}@example.com"
            sent += 1
            started = time.monotonic()
            try:
                response = await http.post("/subscriptions", json={"email": address})
            except httpx.HTTPError as error:
                self.failures[address] = repr(error)
                continue
            self.latencies.append(time.monotonic() - started)
            self.answers[address] = response.status_code


def recipients(outbox: Path) -> Counter[str]:
    """Every email the file outbox holds, by its To header."""
    parser = BytesHeaderParser(policy=compat32)
    return Counter(str(parser.parsebytes(path.read_bytes())["To"]) for path in outbox.glob("*.eml"))


async def test_signup_under_sustained_overload(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    outbox = tmp_path / "outbox"
    env = base_env(
        DATABASE_URL=database_url,
        NEWSLETTER_PORT=str(port),
        NEWSLETTER_BASE_URL=url,
        NEWSLETTER_EMAIL_URL=f"file://{outbox}",
        NEWSLETTER_DATA_DIR=str(tmp_path / "data"),
        NEWSLETTER_SIGNUP_IP_LIMIT="1000000000",
    )
    with (tmp_path / "service.log").open("ab") as log:
        service = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "run", "--no-migrate"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await wait_until_up(url, service)
        load = Load()
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
        headers = {"Connection": "close"}
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, headers=headers) as http:
            until = time.monotonic() + LOAD_SECONDS
            await asyncio.gather(
                load.watch_lag(until), *(load.client(http, number, until) for number in range(CLIENTS))
            )

        # Right afterwards, the service answers at once.
        load_ended = time.monotonic()
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            ready = await http.get("/health/ready")
            after = await http.post("/subscriptions", json={"email": "after.load@example.com"})
        responsive_seconds = time.monotonic() - load_ended
        assert (ready.status_code, after.status_code) == (200, 202), "the service is responsive afterwards"

        answered = Counter(load.answers.values())
        server_errors = {status: count for status, count in answered.items() if status >= 500}
        assert not server_errors, f"5xx answers under load: {server_errors}"
        assert not load.failures, f"requests without an answer: {list(load.failures.items())[:5]}"
        assert set(answered) == {202}, f"answers other than 202: {dict(answered)}"
        assert answered[202] >= MIN_ACCEPTED, f"only {answered[202]} sign-ups accepted in {LOAD_SECONDS} s"
        accepted = Counter(address for address, status in load.answers.items() if status == 202)
        accepted["after.load@example.com"] = 1

        conn = await asyncpg.connect(database_url)
        try:
            drained_at = await drain(conn)
            drain_seconds = drained_at - load_ended
            stored = Counter(row["email"] for row in await conn.fetch("SELECT email FROM subscribers"))
            pending = Counter(
                row["email"]
                for row in await conn.fetch(
                    "SELECT email FROM subscribers JOIN subscriptions ON subscriber_id = subscribers.id "
                    "WHERE subscriptions.status = 'pending'"
                )
            )
            ledger = await conn.fetch(
                "SELECT recipient, status, attempts, reclaimed FROM deliveries WHERE kind = 'confirmation'"
            )
        finally:
            await conn.close()
    finally:
        code = stop(service, signal.SIGTERM)
    assert code == 0, "the service stops cleanly"

    assert stored == accepted, "every 202 is stored exactly once, and nothing else is"
    assert pending == accepted, "every accepted address is pending, once"
    assert Counter(row["recipient"] for row in ledger) == accepted, "one confirmation per address"
    assert {row["status"] for row in ledger} == {"sent"}
    emails = recipients(outbox)
    lost = sum(1 for address in accepted if emails[address] == 0)
    duplicates = sum(emails.values()) - (len(accepted) - lost)
    assert set(emails) <= set(accepted), "no email to an address that was not accepted"
    assert lost == 0, f"{lost} pending addresses have no confirmation email"
    assert duplicates == 0, f"{duplicates} confirmation emails went twice"

    latencies = sorted(load.latencies)
    Figures(
        "sign-up overload",
        len(accepted),
        lost,
        duplicates,
        0,
        responsive_seconds,
        drain_seconds,
        sum(row["attempts"] - 1 for row in ledger),
        sum(row["reclaimed"] for row in ledger),
        notes={
            "clients": CLIENTS,
            "load_seconds": LOAD_SECONDS,
            "requests": len(load.answers) + len(load.failures),
            "requests_per_second": round(len(load.answers) / LOAD_SECONDS),
            "answered": {str(status): count for status, count in sorted(answered.items())},
            "latency_p50_seconds": round(statistics.median(latencies), 3),
            "latency_p99_seconds": round(latencies[int(len(latencies) * 0.99)], 3),
            "latency_max_seconds": round(latencies[-1], 3),
            "load_generator_lag_max_seconds": round(load.lag, 3),
            "send_seconds_is": "from the end of the load until every confirmation email was written",
        },
    ).report()


async def drain(conn: asyncpg.Connection) -> float:
    """Wait until the worker has settled every confirmation email; returns when (time.monotonic())."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE kind = 'confirmation' AND status IN ('queued', 'sending')"
        )
        if waiting == 0:
            return time.monotonic()
        await asyncio.sleep(0.5)
    raise AssertionError(f"{waiting} confirmation emails still waiting after {DRAIN_TIMEOUT} s")
