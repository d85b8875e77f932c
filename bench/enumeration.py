"""Sign-up latency by kind of address: can the time of an answer tell who subscribes?

    .venv/bin/python bench/enumeration.py [--per-kind 400] [--warmup 200] [--rounds 2] [--url URL]

Without --url it starts `newsletter serve --no-migrate` (the HTTP half only, so no worker competes for the
CPU) on a fresh migrated database, with the sign-up limits raised so that they are counted but never reached.
With --url it measures that service instead; DATABASE_URL must then name its database, because the script
prepares the addresses there. Either way it prepares, for each kind, --per-kind addresses never asked for
before: new (nothing stored), pending, confirmed, unsubscribed (each a subscriber with such a subscription
to the default list) and suppressed (unsubscribed after a complaint, on the suppression list). Every address
is asked for once, since asking changes what it is (a new address becomes pending).

The requests are sent one at a time over one keep-alive connection, in a shuffled order that interleaves the
kinds, so drift on a noisy machine hits every kind alike. Prints, per kind, the median and the 90th percentile
of the latency seen by the client, and their ratio to the same figure for new addresses.

Needs PostgreSQL (DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/postgres). Listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, create_database, drop_database, free_port

KINDS = ("new", "pending", "confirmed", "unsubscribed", "suppressed")


async def prepare(database_url: str, per_kind: int, run: str) -> dict[str, list[str]]:
    """`per_kind` fresh addresses of every kind, stored as that kind."""
    addresses = {kind: [f"{kind}-{run}-{n}@example.com" for n in range(per_kind)] for kind in KINDS}
    conn = await asyncpg.connect(database_url)
    try:
        for kind in ("pending", "confirmed", "unsubscribed", "suppressed"):
            status = {"pending": "pending", "confirmed": "confirmed"}.get(kind, "unsubscribed")
            await conn.execute(
                """
                WITH people AS (
                    INSERT INTO subscribers (email, name) SELECT unnest($1::text[]), 'Reader' RETURNING id
                )
                INSERT INTO subscriptions
                    (subscriber_id, list_id, status, confirmed_at, unsubscribed_at, source)
                SELECT people.id, lists.id, $2, now(),
                       CASE WHEN $2 = 'unsubscribed' THEN now() END, 'bench'
                FROM people, lists WHERE lists.slug = 'default'
                """,
                addresses[kind],
                status,
            )
        await conn.execute(
            "INSERT INTO suppressions (email, reason, detail) "
            "SELECT unnest($1::text[]), 'complaint', 'bench'",
            addresses["suppressed"],
        )
    finally:
        await conn.close()
    return addresses


async def measure(url: str, addresses: dict[str, list[str]], warmup: int) -> dict[str, list[float]]:
    order = [(kind, address) for kind, items in addresses.items() for address in items]
    random.shuffle(order)
    timings: dict[str, list[float]] = {kind: [] for kind in KINDS}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for n in range(warmup):
            await client.post("/subscriptions", json={"email": f"warmup-{time.time_ns()}-{n}@example.com"})
        for kind, address in order:
            started = time.perf_counter()
            response = await client.post("/subscriptions", json={"email": address, "name": "Reader"})
            elapsed = time.perf_counter() - started
            if response.status_code != 202:
                raise SystemExit(f"{kind} {address}: {response.status_code} {response.text}")
            timings[kind].append(elapsed * 1000)
    return timings


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def report(timings: dict[str, list[float]]) -> None:
    base_median, base_p90 = statistics.median(timings["new"]), p90(timings["new"])
    print(f"{'kind':<14}{'n':>6}{'median ms':>12}{'p90 ms':>10}{'median/new':>13}{'p90/new':>10}")
    for kind in KINDS:
        values = timings[kind]
        median, high = statistics.median(values), p90(values)
        print(
            f"{kind:<14}{len(values):>6}{median:>12.2f}{high:>10.2f}"
            f"{median / base_median:>13.2f}{high / base_p90:>10.2f}"
        )


def start_service(database_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER_")}
    env.update(
        DATABASE_URL=database_url,
        NEWSLETTER_PORT=str(port),
        NEWSLETTER_EMAIL_URL="memory://",
        NEWSLETTER_LOG_FORMAT="json",
        NEWSLETTER_SIGNUP_IP_LIMIT="100000000",
        NEWSLETTER_SIGNUP_ADDRESS_LIMIT="100000000",
    )
    log = (workdir / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--no-migrate"],
        env=env, cwd=workdir, stdout=log, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready").status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the service did not start; see serve.log")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-kind", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--url", help="a running service whose database is DATABASE_URL")
    args = parser.parse_args()

    own = args.url is None
    database_url = await create_database("newsletter_bench_enum") if own else os.environ["DATABASE_URL"]
    process = None
    try:
        with tempfile.TemporaryDirectory() as workdir:
            url = args.url
            if own:
                process, url = start_service(database_url, Path(workdir))
            timings: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for run in range(args.rounds):
                addresses = await prepare(database_url, args.per_kind, f"{time.time_ns()}-{run}")
                for kind, values in (await measure(url, addresses, args.warmup)).items():
                    timings[kind].extend(values)
            print(f"sign-up latency by kind of address, {args.rounds} x {args.per_kind} per kind, {url}")
            report(timings)
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    finally:
        if process is not None and process.poll() is None:
            process.kill()
        if own:
            await drop_database(database_url)


if __name__ == "__main__":
    os.chdir(ROOT)
    asyncio.run(main())
