"""Worker processes as an operator runs them: several at once, killed, stopped, and the database restarted."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.harness import SMTPServer, add_confirmed
from tests.processes import (
    copies,
    in_flight_now,
    postgresql_of_its_own,
    restart_postgresql,
    saw_outage,
    send_issue,
    start_worker,
    stop,
    wait_for_sent,
    wait_for_status,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def duplicated(conn: asyncpg.Connection, issue_id: int, received: Counter[str]) -> dict[int, int]:
    """The issue's deliveries whose recipient received more than one copy, with the number of copies."""
    rows = await conn.fetch("SELECT id, recipient FROM deliveries WHERE issue_id = $1", issue_id)
    return {row["id"]: received[row["recipient"]] for row in rows if received[row["recipient"]] > 1}


async def test_three_workers_send_each_person_exactly_once(
    database_url: str, conn: asyncpg.Connection, smtp: SMTPServer, tmp_path: Path
) -> None:
    people = await add_confirmed(conn, 2000)  # type: ignore[arg-type]
    issue_id = await send_issue(conn)

    workers = [
        start_worker(database_url, smtp, tmp_path / "workers.log", NEWSLETTER_WORKER_BATCH_SIZE="50")
        for _ in range(3)
    ]
    try:
        await wait_for_status(conn, issue_id, "sent")
    finally:
        codes = [stop(worker) for worker in workers]

    assert codes == [0, 0, 0]
    received = copies(smtp)
    assert set(received) == set(people)
    assert max(received.values()) == 1
    settled_by = await conn.fetchval(
        "SELECT count(DISTINCT attempts) FROM deliveries WHERE issue_id = $1", issue_id
    )
    assert settled_by == 1
    counts = await conn.fetchrow("SELECT sent_count, pending_count FROM issues WHERE id = $1", issue_id)
    assert (counts["sent_count"], counts["pending_count"]) == (2000, 0)


async def test_sigkill_mid_send_loses_nothing_and_duplicates_only_what_was_in_flight(
    database_url: str, conn: asyncpg.Connection, smtp: SMTPServer, tmp_path: Path
) -> None:
    people = await add_confirmed(conn, 5000)  # type: ignore[arg-type]
    issue_id = await send_issue(conn)
    log = tmp_path / "workers.log"
    settings: dict[str, Any] = {"NEWSLETTER_LEASE_SECONDS": "5", "NEWSLETTER_WORKER_BATCH_SIZE": "100"}

    victim = start_worker(database_url, smtp, log, **settings)
    survivor = start_worker(database_url, smtp, log, **settings)
    try:
        await asyncio.wait_for(wait_for_sent(conn, issue_id, 1500), timeout=120)
        # Read just before and just after the kill: what the killed worker held is 'sending' in one of the
        # two, as no lease (5 s) can expire in between.
        in_flight = await in_flight_now(conn, issue_id)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        in_flight |= await in_flight_now(conn, issue_id)
        assert in_flight, "the kill caught deliveries in flight"
        await wait_for_status(conn, issue_id, "sent")
    finally:
        stop(victim)
        assert stop(survivor) == 0

    received = copies(smtp)
    assert set(received) == set(people), "every person receives the issue"
    twice = await duplicated(conn, issue_id, received)
    strays = sorted(set(twice) - in_flight)
    assert not strays, f"{len(strays)} deliveries sent twice, not in flight at the kill: {strays[:10]}..."
    assert set(twice.values()) <= {2}, "once by the killed worker, once by the survivor, never more"
    for delivery_id in twice:
        reclaimed = await conn.fetchval("SELECT reclaimed FROM deliveries WHERE id = $1", delivery_id)
        assert reclaimed > 0, f"delivery {delivery_id} was sent twice without a trace in the ledger"
    assert await conn.fetchval("SELECT sent_count FROM issues WHERE id = $1", issue_id) == 5000


async def test_sigterm_mid_send_drains_and_sends_nothing_twice(
    database_url: str, conn: asyncpg.Connection, smtp: SMTPServer, tmp_path: Path
) -> None:
    people = await add_confirmed(conn, 5000)  # type: ignore[arg-type]
    issue_id = await send_issue(conn)
    log = tmp_path / "workers.log"

    first = start_worker(database_url, smtp, log, NEWSLETTER_WORKER_BATCH_SIZE="100")
    try:
        await asyncio.wait_for(wait_for_sent(conn, issue_id, 1500), timeout=120)
        assert stop(first, signal.SIGTERM) == 0
        in_flight = await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sending'")
        assert in_flight == 0, "a stopped worker leaves no delivery behind in 'sending'"
        sent_before_restart = await conn.fetchval("SELECT sent_count FROM issues WHERE id = $1", issue_id)
        assert 0 < sent_before_restart < 5000
        second = start_worker(database_url, smtp, log)
        await wait_for_status(conn, issue_id, "sent")
        assert stop(second) == 0
    finally:
        stop(first)

    received = copies(smtp)
    assert set(received) == set(people)
    assert max(received.values()) == 1
    assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE reclaimed > 0") == 0


async def test_postgresql_restarted_mid_send_the_worker_recovers_and_finishes(
    smtp: SMTPServer, tmp_path: Path
) -> None:
    """On a PostgreSQL server of its own, so that restarting it disturbs nothing else."""
    async with postgresql_of_its_own(tmp_path / "db") as (url, server):
        conn = await asyncpg.connect(url)
        people = await add_confirmed(conn, 3000)  # type: ignore[arg-type]
        issue_id = await send_issue(conn)
        worker = start_worker(
            url,
            smtp,
            tmp_path / "worker.log",
            NEWSLETTER_WORKER_BATCH_SIZE="100",
            NEWSLETTER_LEASE_SECONDS="10",
        )
        try:
            await asyncio.wait_for(wait_for_sent(conn, issue_id, 500), timeout=120)
            in_flight = await in_flight_now(conn, issue_id)
            await conn.close()
            restart_postgresql(server)
            conn = await asyncpg.connect(url)
            # Claimed since the first reading and unsettled: still 'sending', as the lease (10 s) outlasts
            # the restart.
            in_flight |= await in_flight_now(conn, issue_id)
            await wait_for_status(conn, issue_id, "sent")
            assert stop(worker) == 0
        finally:
            stop(worker)
        received = copies(smtp)
        assert set(received) == set(people), "nothing is lost"
        twice = await duplicated(conn, issue_id, received)
        strays = sorted(set(twice) - in_flight)
        assert not strays, (
            f"{len(strays)} deliveries sent twice, not in flight at the restart: {strays[:10]}..."
        )
        assert set(twice.values()) <= {2}
        assert saw_outage((tmp_path / "worker.log").read_text()), "the worker saw the outage"
        await conn.close()
