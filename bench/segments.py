"""Segments over a million people: counts, and an issue's fan-out to a segment beside the list-only fan-out.

    python bench/segments.py [--people 1000000] [--counts 20] [--runs 2]

A throwaway database with N confirmed people on the default list, each with JSON attributes (`plan`: pro 30 %,
free 50 %, team 20 %; `seats` 1-50; `tags`) and a confirmation time spread over the last year. Then:

- counts: each expression below counted `--counts` times through the service the API calls
  (`services/audience/segments.count`: exact up to 50,000, estimated from a sample beyond); p50 and p95;
- fan-out: an issue to the default list restricted to `attributes.plan = "pro"` (30 % of N), and the same
  issue without a segment (all N), each created and sent by the product's services (`send_issue`: the
  deliveries written in one statement), best of `--runs`, the ledger emptied between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import create_database, drop_database
from newsletter.db.database import Database
from newsletter.services.audience import segments
from newsletter.services.sending import issues

EXPRESSIONS = (
    'attributes.plan = "pro"',
    'attributes.plan = "team" and confirmed_at > 30d',
    'attributes.plan = "pro" and attributes.seats >= 45',
    'list = "default" and attributes.tags contains "beta"',
    "attributes.seats > 48",
    'email = "reader4242@example.com"',
)
SEGMENT = 'attributes.plan = "pro"'


async def add_people(conn: asyncpg.Connection, people: int) -> None:
    await conn.execute(
        """
        WITH people AS (
            INSERT INTO subscribers (email, name, attributes, created_at)
            SELECT 'reader' || n || '@example.com', 'Reader ' || n,
                   jsonb_build_object(
                       'plan', CASE WHEN n % 10 < 3 THEN 'pro' WHEN n % 10 < 8 THEN 'free' ELSE 'team' END,
                       'seats', 1 + (n::bigint * 7919) % 50,
                       'tags', CASE WHEN n % 4 = 0 THEN '["beta", "vip"]'::jsonb ELSE '["early"]'::jsonb END),
                   now() - make_interval(secs => (n::bigint * 104729) % (365 * 86400))
            FROM generate_series(1, $1) AS n
            RETURNING id, created_at
        )
        INSERT INTO subscriptions (subscriber_id, list_id, status, confirmed_at, source)
        SELECT people.id, lists.id, 'confirmed', people.created_at, 'bench'
        FROM people, lists WHERE lists.slug = 'default'
        """,
        people,
    )
    await conn.execute("VACUUM ANALYZE")


async def counts(db: Database, repeats: int) -> None:
    print(f"\nCounts ({repeats} each; exact up to 50,000, estimated beyond):")
    for expression in EXPRESSIONS:
        seconds = []
        for _ in range(repeats):
            began = time.perf_counter()
            found = await segments.count(db, expression)
            seconds.append(time.perf_counter() - began)
        p50 = statistics.median(seconds) * 1000
        p95 = statistics.quantiles(seconds, n=20)[-1] * 1000 if len(seconds) >= 2 else p50
        shown = f"{found.count:,}{' (estimated)' if found.estimated else ''}"
        print(f"  {expression:55} {shown:>22}  p50 {p50:7.1f} ms  p95 {p95:7.1f} ms")


async def fan_out(db: Database, conn: asyncpg.Connection, segment_id: int | None) -> tuple[float, int]:
    await conn.execute("TRUNCATE deliveries")
    await conn.execute("VACUUM ANALYZE deliveries")
    await conn.execute("CHECKPOINT")
    content = issues.IssueContent.parse("News", "Hello.", None, None)
    created = await issues.create_issue(db, content, ["default"], segment_id)
    began = time.perf_counter()
    sent = await issues.send_issue(db, created["id"], None, None)
    seconds = time.perf_counter() - began
    # Not to be sent: this bench measures the fan-out only.
    await conn.execute("UPDATE issues SET status = 'cancelled' WHERE id = $1", created["id"])
    return seconds, int(sent["counts"]["total"])


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--counts", type=int, default=20)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    url = await create_database("newsletter_bench_segments")
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    conn = await asyncpg.connect(url)
    try:
        began = time.perf_counter()
        await add_people(conn, args.people)
        print(f"{args.people:,} people with attributes added in {time.perf_counter() - began:.1f} s")
        db = Database(pool)
        await counts(db, args.counts)
        segment = await segments.create_segment(db, "Pro", SEGMENT)
        timings: dict[str, list[float]] = {"segment": [], "list only": []}
        totals: dict[str, int] = {}
        for run in range(args.runs):
            for name in ["segment", "list only"] if run % 2 == 0 else ["list only", "segment"]:
                seconds, total = await fan_out(db, conn, segment["id"] if name == "segment" else None)
                timings[name].append(seconds)
                totals[name] = total
        print(f"\nFan-out of an issue to the default list (best of {args.runs}):")
        for name, seconds in timings.items():
            best = min(seconds)
            label = f"{SEGMENT!r}" if name == "segment" else "no segment"
            print(
                f"  {label:27} {totals[name]:>9,} deliveries in {best:6.2f} s ({totals[name] / best:,.0f}/s)"
            )
        ratio = min(timings["segment"]) / min(timings["list only"])
        print(f"  the segment's fan-out takes {ratio:.2f} times the list-only one")
    finally:
        await conn.close()
        await pool.close()
        await drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
