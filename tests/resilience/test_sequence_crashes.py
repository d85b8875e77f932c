"""A two-step sequence to 5,000 people while a worker is killed with SIGKILL, twice.

    .venv/bin/pytest tests/resilience/test_sequence_crashes.py -s

Two `newsletter worker` processes sweep the due steps into the ledger and send them to a real SMTP server in
this process that counts the copies each person receives. A killed worker's sweep is one statement (all or
nothing); its emails in flight are reclaimed when their lease (5 s here) expires. Every person gets each step;
a person gets a step twice only if it was in flight at a kill.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
import pytest

from newsletter.config import Settings
from newsletter.db.database import Database
from newsletter.services.automations import sequences
from newsletter.services.automations.sequences import StepContent
from newsletter.services.sending.compose import Composer
from tests.harness import SMTPServer, add_confirmed
from tests.processes import start_worker, stop
from tests.resilience.measure import counter

pytestmark = [pytest.mark.asyncio, pytest.mark.resilience]

PEOPLE = 5_000
STEPS = 2
SETTINGS = {
    "NEWSLETTER_WORKER_BATCH_SIZE": "100",
    "NEWSLETTER_LEASE_SECONDS": "5",
    "NEWSLETTER_RETRY_BASE_SECONDS": "1",
    "NEWSLETTER_SEQUENCE_SWEEP_BATCH": "1000",
}
TIMEOUT = 600


async def _in_flight(conn: asyncpg.Connection) -> set[int]:
    rows = await conn.fetch("SELECT id FROM deliveries WHERE kind = 'sequence' AND status = 'sending'")
    return {row["id"] for row in rows}


async def _sent(conn: asyncpg.Connection) -> int:
    sent: int = await conn.fetchval(
        "SELECT count(*) FROM deliveries WHERE kind = 'sequence' AND status = 'sent'"
    )
    return sent


async def _wait(conn: asyncpg.Connection, at_least: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while await _sent(conn) < at_least:
        assert time.monotonic() < deadline, f"only {await _sent(conn)} of {at_least} step emails sent"
        await asyncio.sleep(0.05)


async def test_steps_survive_workers_killed_with_sigkill(
    database_url: str, ledger: asyncpg.Connection, counting_smtp: SMTPServer, tmp_path: Path
) -> None:
    people = await add_confirmed(ledger, PEOPLE)  # type: ignore[arg-type]
    db = Database.on(ledger)
    composer = Composer(Settings(database_url=database_url))
    created = await sequences.create_sequence(db, "default", "Welcome")
    for delay, subject in ((0, "Welcome"), (2, "Tips")):  # the second step two seconds after the first
        step = StepContent.parse(composer, delay_seconds=delay, subject=subject, markdown="Hello.")
        await sequences.add_step(db, created["id"], step)
    log = tmp_path / "workers.log"
    workers = [start_worker(database_url, counting_smtp, log, **SETTINGS) for _ in range(2)]
    in_flight: set[int] = set()
    try:
        assert (await sequences.enroll(db, created["id"]))["entered"] == PEOPLE
        for progress in (PEOPLE // 3, PEOPLE + PEOPLE // 3):  # one kill during each step
            await _wait(ledger, progress)
            victim = workers.pop(0)
            held = await _in_flight(ledger)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            held |= await _in_flight(ledger)
            assert held, "the kill caught step emails in flight"
            in_flight |= held
            workers.append(start_worker(database_url, counting_smtp, log, **SETTINGS))
        await _wait(ledger, PEOPLE * STEPS)
    finally:
        codes = [stop(worker) for worker in workers]
    assert codes == [0, 0], "the workers left running stop cleanly"

    copies = counter(counting_smtp).copies
    assert set(copies) == set(people), "every person, and nobody else, was mailed"
    lost = sum(STEPS - copies[person] for person in people if copies[person] < STEPS)
    duplicates = sum(copies.values()) - PEOPLE * STEPS + lost
    assert lost == 0
    assert duplicates <= len(in_flight), f"{duplicates} duplicates, {len(in_flight)} emails were in flight"
    statuses = await ledger.fetch("SELECT status, count(*) FROM deliveries GROUP BY status")
    assert [tuple(row) for row in statuses] == [("sent", PEOPLE * STEPS)], "each step queued once per person"
    members = await ledger.fetch("SELECT status, steps_sent, count(*) FROM sequence_members GROUP BY 1, 2")
    assert [tuple(row) for row in members] == [("completed", STEPS, PEOPLE)]
    print(
        f"\nsequence, 2 SIGKILLs: {PEOPLE * STEPS} step emails, lost 0, {duplicates} duplicates, "
        f"{len(in_flight)} in flight at the kills"
    )
