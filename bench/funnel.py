"""The dashboard's sign-up funnel at a million subscriptions.

    python bench/funnel.py [--subscribers 1000000] [--rounds 50]

A throwaway database with ten public lists and N people: 70 % imported long ago (not sign-ups), the other 30 %
signed up over the last 30 days, spread over the lists and the days, 60 % of them confirmed. Timed through the
service (`services/audience/dashboard.funnel`, in its transaction, JIT off, as the dashboard calls it):

- the first view, which counts the 28 days before yesterday once and keeps them in funnel_per_day;
- the views after it (p50, p95 over `rounds`), which read the kept days and count today and yesterday;
- the same after a busy day: as many sign-ups again, all of them today, far beyond the 50,000 rows a view
  counts exactly, so that today is estimated per list.
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
from newsletter.db.queries import Q
from newsletter.services.audience import dashboard

LISTS = 10
DAYS = 30


async def load(conn: asyncpg.Connection, subscribers: int) -> None:
    await conn.execute(
        "INSERT INTO lists (slug, name, visibility) SELECT 'list-' || n, 'List ' || n, 'public'"
        " FROM generate_series(2, $1) AS n",
        LISTS,
    )
    await conn.execute(
        "INSERT INTO subscribers (email) SELECT 'p' || n || '@example.com' FROM generate_series(1, $1) AS n",
        subscribers,
    )
    # Imported: the first 70 %, into the default list, 40 days ago. Signed up: the rest, over 30 days, each
    # list on every day; 60 % confirmed the day they signed up.
    await conn.execute(
        """
        INSERT INTO subscriptions (subscriber_id, list_id, status, created_at, confirmed_at, source)
        SELECT s.id, CASE WHEN imported THEN 1 ELSE 1 + s.id % $2 END,
               CASE WHEN imported OR s.id % 10 < 6 THEN 'confirmed' ELSE 'pending' END,
               signed, CASE WHEN imported OR s.id % 10 < 6 THEN signed END,
               CASE WHEN imported THEN 'import' ELSE 'form' END
        FROM subscribers AS s,
             LATERAL (SELECT s.id <= $1 * 0.7 AS imported) AS kind,
             LATERAL (SELECT CASE WHEN imported THEN now() - interval '40 days'
                                  ELSE now() - (s.id / $2 % $3) * interval '1 day' - interval '1 minute'
                             END AS signed) AS at
        """,
        subscribers,
        LISTS,
        DAYS,
    )
    await conn.execute("VACUUM ANALYZE subscriptions")


async def busy_day(conn: asyncpg.Connection, people: int) -> None:
    await conn.execute(
        """
        WITH people AS (
            INSERT INTO subscribers (email)
            SELECT 'busy' || n || '@example.com' FROM generate_series(1, $1) AS n RETURNING id
        )
        INSERT INTO subscriptions (subscriber_id, list_id, status, created_at, confirmed_at, source)
        SELECT id, 1 + id % $2, CASE WHEN id % 10 < 6 THEN 'confirmed' ELSE 'pending' END, now(),
               CASE WHEN id % 10 < 6 THEN now() END, 'form'
        FROM people
        """,
        people,
        LISTS,
    )
    await conn.execute("VACUUM ANALYZE subscriptions")


async def view(conn: asyncpg.Connection) -> tuple[float, int, bool]:
    started = time.perf_counter()
    async with conn.transaction():
        await conn.execute(Q.without_jit)
        days = [row["day"] for row in await conn.fetch(Q.dashboard_growth, DAYS, 50_000)]
        started = time.perf_counter()
        funnels = await dashboard.funnel(conn, days)
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, sum(funnel.signups for funnel in funnels), any(funnel.estimated for funnel in funnels)


async def views(conn: asyncpg.Connection, rounds: int, label: str) -> None:
    timings = []
    for _ in range(rounds):
        elapsed, signups, estimated = await view(conn)
        timings.append(elapsed)
    p95 = statistics.quantiles(timings, n=20)[-1]
    shown = f"{'≈ ' if estimated else ''}{signups:,}"
    print(f"{label}: p50 {statistics.median(timings):.1f} ms, p95 {p95:.1f} ms ({shown} sign-ups shown)")


async def main(subscribers: int, rounds: int) -> None:
    url = await create_database("bench_funnel")
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await load(conn, subscribers)
        print(f"loaded {subscribers:,} subscribers in {time.perf_counter() - started:.1f} s")
        elapsed, signups, _ = await view(conn)
        print(f"first view (counts and keeps 28 days): {elapsed:.1f} ms ({signups:,} sign-ups)")
        await views(conn, rounds, "views after it")
        await busy_day(conn, subscribers * 3 // 10)
        await views(conn, rounds, f"after {subscribers * 3 // 10:,} sign-ups today")
    finally:
        await conn.close()
        await drop_database(url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1_000_000, help="(1000000)")
    parser.add_argument("--rounds", type=int, default=50, help="views timed after the first (50)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.subscribers, arguments.rounds))
