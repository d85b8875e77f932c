"""Admin page latency with a million subscribers, beside baselines measured in the same run.

    .venv/bin/python bench/admin_pages.py [--subscribers 1000000] [--rounds 200] [--warmup 20]

1. A throwaway database, migrated, then loaded set-based (INSERT ... SELECT over generate_series): N
   subscribers who signed up over three years (one every 95 seconds), one in 500 blocklisted; all of them in
   the `default` list (4 % pending, 6 % unsubscribed, the rest confirmed), a third in `weekly`, a tenth in
   `events` (a seventh of those pending); five sent issues. VACUUM ANALYZE, as autovacuum would have done.
2. `newsletter serve --no-migrate` on a free port, and a session cookie from a real login (an admin user is
   created first).
3. Each round requests every page once, one request at a time over one keep-alive connection, in an order that
   rotates from round to round, after a warm-up: the dashboard (GET /admin) and the subscribers page (GET
   /admin/subscribers): the first page, a page 80 % of the way through, searches (a whole address, the
   beginning of one, the beginning of a name shared by thousands) and filters (a subscription status, a list
   and a status, the blocklisted). The opt-in search inside addresses, which reads every row, is requested
   once every 20 rounds only.
4. Baselines in the same rounds: GET /health/live on the same server (an HTTP request through the same app,
   middleware and connection, no session and no database), and a page of 50 subscribers read by a bare asyncpg
   query (`SELECT ... ORDER BY id LIMIT 50`) over its own connection.

Prints p50, p95 and the largest latency per page, and the ratios of p50 and p95 to the health endpoint's.
Every answer is checked (status 200 and what the page must show). Needs PostgreSQL (DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/postgres); the database and the server are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    create_database,
    drop_database,
    free_port,
    newsletter_command,
    newsletter_env,
    processes,
    wait_for_port,
)
from newsletter.db.database import Database
from newsletter.domain.subscriber import SubscriberEmail
from newsletter.services.access.accounts import create_user

ADMIN = "bench@example.com"
PASSWORD = "a benchmark password of some length"
FIRST = ["Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Guido", "Hedy"]
FIRST += ["Ken", "Linus", "Margaret", "Niklaus", "Radia", "Tim", "Donald", "Katherine"]
LAST = ["Lovelace", "Hopper", "Turing", "Liskov", "Dijkstra", "Allen", "Rossum", "Lamarr", "Thompson"]
LAST += ["Torvalds", "Hamilton", "Wirth", "Perlman", "Berners", "Knuth", "Johnson", "Ritchie"]
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "example.org", "web.de", "proton.me", "icloud.com"]
DOMAINS += ["fastmail.com"]
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_ROW = re.compile(r'<tr><td><a href="/admin/subscribers/(\d+)">')


async def load(url: str, subscribers: int) -> None:
    """The data set, set-based: a few statements, each over generate_series."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO lists (slug, name) VALUES ('weekly', 'Weekly digest'), ('events', 'Events')"
        )
        await conn.execute(
            """
            INSERT INTO subscribers (email, name, status, created_at, updated_at)
            SELECT lower(first) || '.' || lower(last) || n || '@' || domain, first || ' ' || last,
                   CASE WHEN n % 500 = 0 THEN 'blocklisted' ELSE 'active' END,
                   now() - n * interval '95 seconds', now() - n * interval '95 seconds'
            FROM generate_series(1, $1) AS n,
                 LATERAL (SELECT ($2::text[])[1 + n % cardinality($2)] AS first,
                                 ($3::text[])[1 + n % cardinality($3)] AS last,
                                 ($4::text[])[1 + n % cardinality($4)] AS domain) AS parts
            """,
            subscribers,
            FIRST,
            LAST,
            DOMAINS,
        )
        await conn.execute(
            """
            INSERT INTO subscriptions (subscriber_id, list_id, status, created_at, confirmed_at,
                                       unsubscribed_at, source)
            SELECT s.id, lists.id,
                   CASE WHEN s.id % 25 = 0 THEN 'pending' WHEN s.id % 16 = 0 THEN 'unsubscribed'
                        ELSE 'confirmed' END,
                   s.created_at, s.created_at, CASE WHEN s.id % 16 = 0 THEN s.created_at END, 'import'
            FROM subscribers AS s, lists WHERE lists.slug = 'default';

            INSERT INTO subscriptions (subscriber_id, list_id, status, created_at, confirmed_at, source)
            SELECT s.id, lists.id, 'confirmed', s.created_at, s.created_at, 'import'
            FROM subscribers AS s, lists WHERE lists.slug = 'weekly' AND s.id % 3 = 0;

            INSERT INTO subscriptions (subscriber_id, list_id, status, created_at, confirmed_at, source)
            SELECT s.id, lists.id, CASE WHEN s.id % 7 = 0 THEN 'pending' ELSE 'confirmed' END,
                   s.created_at, s.created_at, 'import'
            FROM subscribers AS s, lists WHERE lists.slug = 'events' AND s.id % 10 = 0;

            INSERT INTO issues (subject, markdown, html, text_body, status, started_at, finished_at,
                                total_count, sent_count, failed_count)
            SELECT 'Issue ' || n, 'Hello', '<p>Hello</p>', 'Hello', 'sent', now() - n * interval '7 days',
                   now() - n * interval '7 days' + interval '20 minutes', $1, $1 - n, n
            FROM generate_series(1, 5) AS n;
            """.replace("$1", str(subscribers))
        )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def log_in(client: httpx.AsyncClient) -> None:
    page = await client.get("/admin/login")
    found = _CSRF.search(page.text)
    assert found, "the login page has no CSRF token"
    fields = {"csrf_token": found[1], "email": ADMIN, "password": PASSWORD, "next": ""}
    answer = await client.post("/admin/login", data=fields)
    assert answer.status_code == 303 and client.cookies.get("nl_session"), answer.text[:300]


@dataclass
class Target:
    name: str
    run: Callable[[], Awaitable[None]]
    every: int = 1  # measured in one round out of `every`
    baseline: bool = False
    samples: list[float] = field(default_factory=list)

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def page(
    client: httpx.AsyncClient, path: str, must_show: str, rows: int | None = None
) -> Callable[[], Awaitable[None]]:
    async def get() -> None:
        answer = await client.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
        assert must_show in answer.text, (path, must_show)
        if rows is not None:
            assert len(_ROW.findall(answer.text)) == rows, (path, len(_ROW.findall(answer.text)))

    return get


async def measure(args: argparse.Namespace) -> dict[str, object]:
    url = await create_database("newsletter_bench_admin")
    try:
        began = time.perf_counter()
        await load(url, args.subscribers)
        loaded = time.perf_counter() - began
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            await create_user(Database(pool), SubscriberEmail.parse(ADMIN), PASSWORD)
            facts = await pool.fetchrow(
                """SELECT (SELECT count(*) FROM subscribers) AS subscribers,
                          (SELECT count(*) FROM subscriptions) AS subscriptions,
                          pg_size_pretty(pg_database_size(current_database())) AS size"""
            )
            person = await pool.fetchrow(
                "SELECT id, email, name FROM subscribers WHERE id = $1", args.subscribers - 12_345
            )
            later = await pool.fetchval(
                "SELECT id FROM subscribers ORDER BY id OFFSET $1 LIMIT 1", int(args.subscribers * 0.8)
            )
        finally:
            await pool.close()
        print(
            f"admin pages benchmark: {os.cpu_count()} cores; {facts['subscribers']:,} subscribers, "
            f"{facts['subscriptions']:,} subscriptions, database {facts['size']}, loaded in {loaded:.0f} s",
            flush=True,
        )
        port = free_port()
        env = newsletter_env(url, NEWSLETTER_PORT=str(port), NEWSLETTER_BASE_URL=f"http://127.0.0.1:{port}")
        with tempfile.TemporaryDirectory(prefix="newsletter-bench-") as workdir:
            log = Path(workdir) / "serve.log"
            with processes((newsletter_command("serve", "--no-migrate"), env), log=log):
                wait_for_port(port)
                bare = await asyncpg.connect(url)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                    await log_in(client)
                    targets = _targets(client, bare, person, later)
                    await _rounds(targets, args)
                await bare.close()
            errors = [line for line in log.read_text().splitlines() if '"level": "error"' in line]
            assert not errors, errors[:3]
    finally:
        await drop_database(url)
    health = next(target for target in targets if target.name == "baseline: GET /health/live")
    rows = []
    for target in targets:
        rows.append(
            {
                "page": target.name,
                "requests": len(target.samples),
                "p50_ms": target.percentile(0.5),
                "p95_ms": target.percentile(0.95),
                "max_ms": max(target.samples),
                "p50_ratio": target.percentile(0.5) / health.percentile(0.5),
                "p95_ratio": target.percentile(0.95) / health.percentile(0.95),
            }
        )
    return {"subscribers": facts["subscribers"], "subscriptions": facts["subscriptions"], "pages": rows}


def _targets(
    client: httpx.AsyncClient, bare: asyncpg.Connection, person: asyncpg.Record, later: int
) -> list[Target]:
    email, name = person["email"], person["name"]
    beginning = email[: email.index("@") - 2]  # "ada.turing9876" of ada.turing987654@...
    first_name, last_name = name.split(" ")
    name_beginning = f"{first_name} {last_name[0]}"  # "Ada T": Ada Turing, Ada Thompson, Ada Torvalds

    async def health() -> None:
        answer = await client.get("/health/live")
        assert answer.status_code == 200

    async def bare_page() -> None:
        rows = await bare.fetch(
            "SELECT id, email, name, status, created_at FROM subscribers WHERE id > $1 ORDER BY id LIMIT 50",
            later,
        )
        assert len(rows) == 50

    def subscribers(must_show: str, rows: int | None = None, **query: str) -> Callable[[], Awaitable[None]]:
        return page(client, f"/admin/subscribers?{urlencode(query)}", must_show, rows)

    return [
        Target("baseline: GET /health/live", health, baseline=True),
        Target("baseline: bare asyncpg page of 50", bare_page, baseline=True),
        Target("dashboard", page(client, "/admin", "Weekly digest")),
        Target("subscribers, first page", subscribers("Next page", 50)),
        Target("subscribers, page at 80 %", subscribers("First page", 50, after=str(later))),
        Target("search: a whole address", subscribers(email, 1, q=email)),
        Target("search: beginning of an address", subscribers(email, q=beginning)),
        Target("search: beginning of a name (thousands)", subscribers(first_name, 50, q=name_beginning)),
        Target("status: unsubscribed", subscribers("Next page", 50, status="unsubscribed")),
        Target("list events, status pending", subscribers("Next page", 50, list="events", status="pending")),
        Target("status: blocklisted", subscribers("Next page", 50, status="blocklisted")),
        Target(
            "search inside addresses (opt-in; every row)",
            subscribers(email, 1, q=email[2:], match="contains"),
            every=20,
        ),
    ]


async def _rounds(targets: list[Target], args: argparse.Namespace) -> None:
    for target in targets:
        for _ in range(args.warmup if target.every == 1 else 1):
            await target.run()
    for round_index in range(args.rounds):
        shift = round_index % len(targets)
        for target in targets[shift:] + targets[:shift]:
            if round_index % target.every:
                continue
            started = time.perf_counter()
            await target.run()
            target.samples.append((time.perf_counter() - started) * 1000)
        if (round_index + 1) % 50 == 0:
            print(f"  {round_index + 1} rounds", flush=True)


def _table(result: dict[str, object]) -> str:
    lines = [
        "| page | requests | p50 ms | p95 ms | max ms | p50 / health | p95 / health |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    pages = result["pages"]
    assert isinstance(pages, list)
    for row in pages:
        lines.append(
            f"| {row['page']} | {row['requests']} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | "
            f"{row['max_ms']:.1f} | {row['p50_ratio']:.1f} | {row['p95_ratio']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1_000_000, help="(1000000)")
    parser.add_argument("--rounds", type=int, default=200, help="measured requests per page (200)")
    parser.add_argument("--warmup", type=int, default=20, help="requests per page before measuring (20)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    # A SIGTERM unwinds like Ctrl-C, so that the server is stopped and the database dropped either way.
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    if args.subscribers < 20_000:
        parser.error("--subscribers must be at least 20000 (the pages measured need that many)")
    result = asyncio.run(measure(args))
    print()
    print(_table(result))
    slow = [
        row["page"]
        for row in result["pages"]  # type: ignore[attr-defined]
        if row["p95_ms"] >= 100 and "opt-in" not in row["page"]
    ]
    print()
    print("goal, p95 under 100 ms:", "met" if not slow else f"NOT met for {', '.join(slow)}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
