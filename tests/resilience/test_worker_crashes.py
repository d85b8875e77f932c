"""A send of 20,000 while worker processes are killed with SIGKILL, and while PostgreSQL restarts.

    .venv/bin/pytest tests/resilience -s        # the whole matrix, figures printed

Two `newsletter worker` processes send to a real SMTP server in this process that counts every copy each
person receives. Settings are scaled down (a 5 s lease instead of 120 s) so that recovery shows up within a
test.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from tests.harness import SMTPServer, add_confirmed
from tests.processes import (
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
from tests.resilience.measure import (
    PEOPLE,
    Figures,
    check_send,
    clock,
    counter,
    ledger_totals,
    resumed_after,
    settled_after,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.resilience]

WORKERS = 2
BATCH_SIZE = 100
LANES = 2  # the default NEWSLETTER_WORKER_CONCURRENCY: batches in flight per worker
SETTINGS = {
    "NEWSLETTER_WORKER_BATCH_SIZE": str(BATCH_SIZE),
    "NEWSLETTER_WORKER_CONCURRENCY": str(LANES),
    "NEWSLETTER_LEASE_SECONDS": "5",
    # The default retry policy (8 attempts) at a fifteenth of its pace: 2 s, 4 s, 8 s... not 30 s, 60 s...
    "NEWSLETTER_RETRY_BASE_SECONDS": "2",
    "NEWSLETTER_RETRY_MAX_SECONDS": "240",
}
SEND_TIMEOUT = 600  # seconds; generous, for a machine shared with other work


def start_workers(database_url: str, smtp: SMTPServer, log: Path) -> list[subprocess.Popen[bytes]]:
    return [start_worker(database_url, smtp, log, **SETTINGS) for _ in range(WORKERS)]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
async def test_workers_killed_with_sigkill_at_random_moments(
    seed: int, database_url: str, ledger: asyncpg.Connection, counting_smtp: SMTPServer, tmp_path: Path
) -> None:
    """Twice during the send, one of the workers is killed at a random moment and a new one started, as a
    supervisor would. The killed worker's leases expire and the others send its deliveries."""
    rng = random.Random(seed)
    people = await add_confirmed(ledger, PEOPLE)  # type: ignore[arg-type]
    issue_id = await send_issue(ledger)
    log = tmp_path / "workers.log"
    started = time.monotonic()
    workers = start_workers(database_url, counting_smtp, log)
    kills: list[tuple[datetime, set[int]]] = []
    try:
        for low, high in ((0.1, 0.45), (0.5, 0.85)):
            progress = int(PEOPLE * rng.uniform(low, high))
            await asyncio.wait_for(wait_for_sent(ledger, issue_id, progress), timeout=SEND_TIMEOUT)
            await asyncio.sleep(rng.uniform(0, 0.3))  # anywhere in a batch: claiming, sending or recording
            victim = workers.pop(rng.randrange(len(workers)))
            # What it holds is 'sending' (the survivor's too) just before or just after the kill: no lease
            # (5 s) expires in between.
            held = await in_flight_now(ledger, issue_id)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            held |= await in_flight_now(ledger, issue_id)
            assert held, "the kill caught deliveries in flight"
            kills.append((await clock(ledger), held))
            workers.append(start_worker(database_url, counting_smtp, log, **SETTINGS))
        await wait_for_status(ledger, issue_id, "sent", timeout=SEND_TIMEOUT)
        send_seconds = time.monotonic() - started
    finally:
        codes = [stop(worker) for worker in workers]
    assert codes == [0] * WORKERS, "the workers left running stop cleanly"

    in_flight = set().union(*(held for _, held in kills))
    lost, duplicates, twice = await check_send(
        ledger, issue_id, people, counter(counting_smtp).copies, in_flight=len(in_flight)
    )
    for row in twice:
        assert row["id"] in in_flight, f"{row['recipient']} went twice but was not in flight at a kill"
        assert row["reclaimed"] > 0, f"{row['recipient']} went twice without a reclaimed lease in the ledger"
    recovery = max([await settled_after(ledger, held, killed_at) for killed_at, held in kills])
    retried, reclaimed = await ledger_totals(ledger, issue_id)
    Figures(
        f"worker SIGKILL, seed {seed}",
        PEOPLE,
        lost,
        duplicates,
        len(in_flight),
        recovery,
        send_seconds,
        retried,
        reclaimed,
        notes={"kills": len(kills), "lease_seconds": float(SETTINGS["NEWSLETTER_LEASE_SECONDS"])},
    ).report()


async def test_postgresql_restarted_mid_send(counting_smtp: SMTPServer, tmp_path: Path) -> None:
    """PostgreSQL restarted (fast mode: every connection dropped) a quarter into the send, on a server of its
    own. The workers keep the outcomes of the emails they sent and record them once it is back."""
    async with postgresql_of_its_own(tmp_path / "db") as (url, server):
        conn = await asyncpg.connect(url)
        people = await add_confirmed(conn, PEOPLE)  # type: ignore[arg-type]
        issue_id = await send_issue(conn)
        log = tmp_path / "workers.log"
        started = time.monotonic()
        workers = start_workers(url, counting_smtp, log)
        try:
            await asyncio.wait_for(wait_for_sent(conn, issue_id, PEOPLE // 4), timeout=SEND_TIMEOUT)
            held = await in_flight_now(conn, issue_id)
            assert held, "the restart catches deliveries in flight"
            await conn.close()
            down = time.monotonic()
            await asyncio.to_thread(restart_postgresql, server)
            outage = time.monotonic() - down
            conn = await asyncpg.connect(url)
            back_at = await clock(conn)
            await wait_for_status(conn, issue_id, "sent", timeout=SEND_TIMEOUT)
            send_seconds = time.monotonic() - started
        finally:
            codes = [stop(worker) for worker in workers]
        assert codes == [0] * WORKERS

        # At most every batch of every lane was in flight when the connections dropped.
        in_flight = WORKERS * LANES * BATCH_SIZE
        lost, duplicates, twice = await check_send(
            conn, issue_id, people, counter(counting_smtp).copies, in_flight=in_flight
        )
        for row in twice:
            assert row["reclaimed"] > 0, f"{row['recipient']} went twice without a reclaimed lease"
        assert saw_outage(log.read_text()), "the workers saw the outage"
        recovery = max(await resumed_after(conn, issue_id, back_at), await settled_after(conn, held, back_at))
        retried, reclaimed = await ledger_totals(conn, issue_id)
        await conn.close()
    Figures(
        "PostgreSQL restarted",
        PEOPLE,
        lost,
        duplicates,
        in_flight,
        recovery,
        send_seconds,
        retried,
        reclaimed,
        notes={"restart_seconds": round(outage, 2), "sending_at_restart": len(held)},
    ).report()
