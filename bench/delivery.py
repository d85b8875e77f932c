"""Delivery throughput, fan-out time and worker memory.

    python bench/delivery.py [--subscribers 100000] [--workers 2] [--fanout 1000000]

1. Throughput: N confirmed subscribers, one issue sent through `newsletter serve` to postfix's `smtp-sink`
   on loopback by `newsletter worker` processes; emails per second from the send request until the issue is
   'sent' (every delivery recorded), beside `smtp-source` pushing as many messages of the same size into the
   same sink in the same run: the C limit of this machine.
2. Memory: the peak RSS of each worker process during that send.
3. Fan-out: the time to create the deliveries of one issue for M subscribers (the send request's statement),
   beside a bare `INSERT ... SELECT` into the same table with the same indexes.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    create_database,
    drop_database,
    ensure_debian_tool,
    free_port,
    newsletter_command,
    newsletter_env,
    peak_rss_mb,
    processes,
    wait_for_port,
)
from newsletter.db.database import Database
from newsletter.services.access.tokens import create_token

MARKDOWN = (
    "# This week\n\n"
    + "A paragraph of news with a [link](https://example.com/article) and some *emphasis*. " * 12
    + "\n\n## More\n\n"
    + "\n".join(f"- item {n}: something worth reading about" for n in range(15))
)


async def add_subscribers(url: str, count: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            WITH people AS (
                INSERT INTO subscribers (email, name)
                SELECT 'reader' || n || '@example.com', 'Reader ' || n FROM generate_series(1, $1) AS n
                RETURNING id
            )
            INSERT INTO subscriptions (subscriber_id, list_id, status, confirmed_at, source)
            SELECT people.id, (SELECT id FROM lists WHERE slug = 'default'), 'confirmed', now(), 'bench'
            FROM people
            """,
            count,
        )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def smtp_source(port: int, messages: int, size: int, sessions: int) -> float:
    """Messages per second that postfix's C client pushes into the sink over reused connections."""
    binary = ensure_debian_tool("smtp-source", "postfix")
    started = time.perf_counter()
    subprocess.run(
        [binary, "-d", "-s", str(sessions), "-m", str(messages), "-l", str(size),
         "-f", "newsletter@localhost", "-t", "reader@example.com", f"127.0.0.1:{port}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return messages / (time.perf_counter() - started)


async def service_throughput(
    url: str, smtp_port: int, subscribers: int, workers: int, log: Path
) -> tuple[float, list[float], int]:
    conn = await asyncpg.connect(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    token = await create_token(Database(pool), "bench")
    await pool.close()
    http_port = free_port()
    settings = {"NEWSLETTER_EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}", "NEWSLETTER_PORT": str(http_port)}
    env = newsletter_env(url, **settings)
    commands = [(newsletter_command("serve", "--no-migrate"), env)]
    commands += [(newsletter_command("worker"), env) for _ in range(workers)]
    try:
        with processes(*commands, log=log) as started:
            wait_for_port(http_port)
            await asyncio.sleep(1)  # the workers connect and listen
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{http_port}/api/v1", headers={"Authorization": f"Bearer {token}"}
            ) as client:
                created = await client.post(
                    "/issues", json={"subject": "Benchmark issue", "markdown": MARKDOWN}
                )
                issue_id = created.json()["id"]
                began = time.perf_counter()
                sent = await client.post(f"/issues/{issue_id}/send")
                assert sent.status_code == 202, sent.text
                while await conn.fetchval("SELECT status FROM issues WHERE id = $1", issue_id) != "sent":
                    await asyncio.sleep(0.02)
                elapsed = time.perf_counter() - began
            rss = [peak_rss_mb(process.pid) for process in started[1:]]
        delivered = await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE issue_id = $1 AND status = 'sent'", issue_id
        )
        return subscribers / elapsed, rss, delivered
    finally:
        await conn.close()


async def fan_out(url: str, runs: int = 3) -> dict[str, float]:
    """Best of `runs` each, in rotating order: the product's fan-out (the send request's statements); a bare
    INSERT ... SELECT of rows of the same shape into the same table (same indexes); and one into a table with
    only the unique index, as the goal is stated."""
    from newsletter.services.sending.issues import IssueContent, create_issue, start_sending

    conn = await asyncpg.connect(url)
    await conn.execute(
        """CREATE TABLE bare_deliveries (LIKE deliveries INCLUDING DEFAULTS INCLUDING IDENTITY);
           CREATE UNIQUE INDEX ON bare_deliveries (subscriber_id, issue_id)"""
    )
    bare = """INSERT INTO {table} (kind, issue_id, subscriber_id, list_id, recipient, next_attempt_at)
              SELECT 'newsletter', $1, subscribers.id, 1, subscribers.email, NULL FROM subscribers"""
    timings: dict[str, list[float]] = {
        "newsletter": [],
        "bare, same table": [],
        "bare, unique index only": [],
    }
    names = list(timings)
    try:
        for run in range(runs):
            for name in names[run % 3 :] + names[: run % 3]:
                await conn.execute("CHECKPOINT")
                db = Database.on(conn)
                async with db.transaction():
                    issue = await create_issue(
                        db, IssueContent.parse("Fan-out", "x", None, None), ["default"]
                    )
                    began = time.perf_counter()
                    if name == "newsletter":
                        await start_sending(conn, issue["id"], None)
                    else:
                        table = "deliveries" if name == "bare, same table" else "bare_deliveries"
                        await conn.execute(bare.format(table=table), issue["id"])
                    timings[name].append(time.perf_counter() - began)
                # Each run starts from the same clean, empty tables.
                await conn.execute("TRUNCATE deliveries, bare_deliveries")
        return {name: min(seconds) for name, seconds in timings.items()}
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--fanout", type=int, default=1_000_000, help="subscribers for the fan-out figure; 0 skips"
    )
    args = parser.parse_args()
    if args.subscribers:
        await throughput(args.subscribers, args.workers)
    if args.fanout:
        url = await create_database("newsletter_bench_fanout")
        try:
            await add_subscribers(url, args.fanout)
            timings = await fan_out(url)
            print(f"\nFan-out to {args.fanout:,} subscribers (best of three)")
            for name, seconds in timings.items():
                print(
                    f"  {name}: {seconds:.2f} s ({seconds / timings['newsletter']:.2f} of the product's time)"
                )
        finally:
            await drop_database(url)


async def throughput(subscribers: int, workers: int) -> None:
    sink = ensure_debian_tool("smtp-sink", "postfix")
    log = Path("bench/results")
    log.mkdir(parents=True, exist_ok=True)
    smtp_port = free_port()
    sink_process = subprocess.Popen([sink, "-u", "nobody", f"127.0.0.1:{smtp_port}", "1024"])
    url = await create_database("newsletter_bench")
    try:
        wait_for_port(smtp_port)
        await add_subscribers(url, subscribers)
        rate, rss, delivered = await service_throughput(
            url, smtp_port, subscribers, workers, log / "delivery.log"
        )
        limit = smtp_source(smtp_port, subscribers, 3000, 20)
        print(f"\nDelivery of one issue to {subscribers:,} confirmed subscribers into smtp-sink")
        print(
            f"  newsletter ({workers} workers): {rate:,.0f} emails/s, ledger complete: "
            f"{delivered:,}/{subscribers:,}"
        )
        print(f"  smtp-source (C, 20 sessions):  {limit:,.0f} emails/s")
        print(f"  ratio: {rate / limit:.2f} of the C limit")
        print(f"  worker peak RSS: {', '.join(f'{mb:.0f} MB' for mb in rss)}")
    finally:
        sink_process.terminate()
        sink_process.wait()
        await drop_database(url)


if __name__ == "__main__":
    asyncio.run(main())
