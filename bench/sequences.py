"""The sequence sweep: a million people due for a step at once.

    python bench/sequences.py [--people 1000000] [--runs 3]

A list of N confirmed people, a two-step sequence (the first step at once, the second a day later) that they
are enrolled in, so that all N are due for step 1. Timed, best of `runs` in rotating order, each from the same
state (everyone due for step 1, the ledger empty, tables vacuumed):

- the product: the worker's sweep (`services/automations/sequences.sweep`, batches of
  NEWSLETTER_SEQUENCE_SWEEP_BATCH on NEWSLETTER_SEQUENCE_SWEEP_CONNECTIONS side by side), which queues each
  due step as a delivery (once per person and step: the ledger's unique key) and moves each member on to the
  next step;
- the bare statement: an `INSERT ... SELECT` of the same rows into the same table (same indexes), which
  neither moves the members nor takes their row locks.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import create_database, drop_database
from bench.delivery import add_subscribers
from newsletter.config import Settings
from newsletter.db.database import Database
from newsletter.services.automations import sequences
from newsletter.services.automations.sequences import StepContent
from newsletter.services.sending.compose import Composer

BARE = """
INSERT INTO deliveries (kind, subscriber_id, list_id, recipient, next_attempt_at, step_id)
SELECT 'sequence', m.subscriber_id, $2, subscribers.email, now(), $3
FROM sequence_members AS m JOIN subscribers ON subscribers.id = m.subscriber_id
WHERE m.sequence_id = $1
"""
RESET = """
UPDATE sequence_members
SET steps_sent = 0, status = 'active', last_step_at = NULL, next_due_at = now() - interval '1 second'
"""


async def prepare(url: str, people: int) -> tuple[int, int, int, float]:
    """The people, the sequence and its members; returns the sequence, its list, its first step, and the time
    the enrollment of everyone took."""
    await add_subscribers(url, people)
    settings = Settings(database_url=url)
    composer = Composer(settings)
    conn = await asyncpg.connect(url)
    try:
        db = Database.on(conn)
        created = await sequences.create_sequence(db, "default", "Welcome")
        for delay, subject in ((0, "Welcome"), (86400, "Tips")):
            step = StepContent.parse(composer, delay_seconds=delay, subject=subject, markdown="Hello.")
            await sequences.add_step(db, created["id"], step)
        began = time.perf_counter()
        entered = await sequences.enroll(db, created["id"])
        enrolled = time.perf_counter() - began
        assert entered["entered"] == people, entered
        first_step = await conn.fetchval(
            "SELECT id FROM sequence_steps WHERE sequence_id = $1 AND position = 1", created["id"]
        )
        list_id = await conn.fetchval("SELECT list_id FROM sequences WHERE id = $1", created["id"])
        return created["id"], list_id, first_step, enrolled
    finally:
        await conn.close()


async def measure(url: str, people: int, runs: int) -> dict[str, float]:
    sequence_id, list_id, first_step, enrolled = await prepare(url, people)
    print(f"Enrolled {people:,} people in {enrolled:.2f} s (one statement, with their events)")
    settings = Settings(database_url=url)
    batch, connections = settings.sequence_sweep_batch, settings.sequence_sweep_connections
    print(f"The sweep: batches of {batch:,}, {connections} connections side by side (the worker's defaults)")
    timings: dict[str, list[float]] = {"sweep (the product)": [], "bare INSERT ... SELECT": []}
    names = list(timings)
    pool = await asyncpg.create_pool(url, min_size=connections, max_size=connections)
    conn = await asyncpg.connect(url)
    try:
        db = Database(pool)
        for run in range(runs):
            for name in names[run % 2 :] + names[: run % 2]:
                await conn.execute("TRUNCATE deliveries")
                await conn.execute(RESET)
                await conn.execute("VACUUM ANALYZE sequence_members")
                await conn.execute("VACUUM ANALYZE deliveries")
                await conn.execute("CHECKPOINT")
                began = time.perf_counter()
                if name == names[0]:
                    swept = await sequences.sweep(db, batch, connections=connections)
                    assert swept.queued == people, swept
                else:
                    await conn.execute(BARE, sequence_id, list_id, first_step)
                timings[name].append(time.perf_counter() - began)
                queued = await conn.fetchval("SELECT count(*) FROM deliveries WHERE step_id = $1", first_step)
                assert queued == people, f"{name}: {queued} of {people} queued"
        return {name: min(seconds) for name, seconds in timings.items()}
    finally:
        await conn.close()
        await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    url = await create_database("newsletter_bench_sequences")
    try:
        timings = await measure(url, args.people, args.runs)
    finally:
        await drop_database(url)
    product = timings["sweep (the product)"]
    print(f"\nSequence sweep of {args.people:,} people due at once (best of {args.runs})")
    for name, seconds in timings.items():
        print(
            f"  {name}: {seconds:.2f} s, {args.people / seconds:,.0f} steps/s "
            f"(the product takes {product / seconds:.2f} times as long)"
        )


if __name__ == "__main__":
    asyncio.run(main())
