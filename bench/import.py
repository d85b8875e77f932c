"""CSV import throughput.

    python bench/import.py [--rows 1000000] [--keep-csv PATH]

Generates a CSV of N people (realistic addresses over common and company domains, names with accents,
some attributes, and a few bad rows: invalid addresses, duplicates, wrong field counts, bad JSON), then in
the same run:

1. Baseline: a bare `COPY` of the same file into an unindexed table with the same columns, all text, by
   PostgreSQL's own CSV parser (no validation, no normalization, no merge): the physical limit.
2. The parsing and validation alone (`RowParser` over the file, no database): the part that runs in Python.
   And the bare writes: the file's people, already parsed, deduplicated and staged, written into the
   product's tables (with every index) by one `INSERT ... SELECT`: what one transaction cannot avoid.
3. The service: `import_csv` (the code path of `newsletter import` and the API) into a fresh migrated
   database, into the `default` list; rows per second counting every data row of the file, as a fraction of
   the baseline's rate and of the bare writes' rate (the figure the import is held to: at least 0.85), the CPU
   time of the database backend and of this process (the machine is shared: CPU time moves less than wall time
   with the load of others), and the report.
4. The same file again into the same database (every row now names an existing subscriber).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import io
import os
import pstats
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import create_database, drop_database
from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.services.audience.imports import COPIED_COLUMNS, ImportReport, RowParser, import_csv

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Barbara",
    "Edsger",
    "Frances",
    "Guido",
    "Hedy",
    "Ken",
    "Linus",
    "Margaret",
    "Niklaus",
    "Radia",
    "Tim",
    "Donald",
    "Katherine",
    "José",
    "Zoë",
    "Søren",
    "Łukasz",
    "Amélie",
    "Chloé",
    "Mohammed",
    "Wei",
    "Priya",
    "Olusegun",
    "Yuki",
    "Mateo",
    "Sofía",
    "Ingrid",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Liskov",
    "Dijkstra",
    "Allen",
    "van Rossum",
    "Lamarr",
    "Thompson",
    "Torvalds",
    "Hamilton",
    "Wirth",
    "Perlman",
    "Berners-Lee",
    "Knuth",
    "Johnson",
    "Müller",
    "García",
    "O'Brien",
    "Nguyen",
    "Kowalski",
    "Sørensen",
    "Smith",
    "Chen",
    "Patel",
    "Okafor",
    "Tanaka",
    "Rossi",
]
COMMON_DOMAINS = [
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "gmx.de",
    "web.de",
    "proton.me",
    "orange.fr",
    "yahoo.co.uk",
    "mail.ru",
    "qq.com",
    "aol.com",
    "fastmail.com",
]
PLANS = ['{"plan": "free"}', '{"plan": "pro", "seats": 3}', '{"source": "mailchimp", "tags": ["a", "b"]}']


def generate(path: Path, bare_path: Path, rows: int, seed: int = 42) -> int:
    """Writes the CSV, and the same without its rows of the wrong width (which a bare COPY refuses) for the
    baseline; returns how many rows are bad on purpose."""
    rng = random.Random(seed)
    companies = [
        f"{rng.choice(LAST).lower().replace(' ', '').replace(chr(39), '')}-{n}.example.com"
        for n in range(5000)
    ]
    bad = 0
    with (
        path.open("w", newline="", encoding="utf-8") as file,
        bare_path.open("w", newline="", encoding="utf-8") as bare_file,
    ):
        writer, bare_writer = csv.writer(file), csv.writer(bare_file)
        writer.writerow(["email", "name", "attributes"])
        bare_writer.writerow(["email", "name", "attributes"])
        for n in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            domain = rng.choice(COMMON_DOMAINS) if rng.random() < 0.7 else rng.choice(companies)
            local = f"{first}.{last}".lower().replace(" ", "").replace("'", "")
            if not local.isascii():
                local = "".join(char for char in local if char.isascii()) or "someone"
            email = f"{local}{n}@{domain}"
            if rng.random() < 0.3:
                email = email.capitalize()
            attributes = rng.choice(PLANS) if rng.random() < 0.2 else ""
            row = [email, f"{first} {last}", attributes]
            roll = rng.random()
            if roll < 0.0005:
                row[0] = f"{local}{n}.at.{domain}"  # no @-sign
                bad += 1
            elif roll < 0.001 and n > 0:
                row[0] = f"{local}{n - 1}@{domain}".upper()  # most likely a duplicate of the row before
            elif roll < 0.0012:
                row = row[:2]  # a field missing
                bad += 1
            elif roll < 0.0014:
                row[2] = "{plan: free}"  # not JSON
                bad += 1
            writer.writerow(row)
            if len(row) == 3:
                bare_writer.writerow(row)
    return bad


async def baseline(url: str, path: Path) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE UNLOGGED TABLE bare_import (email text, name text, attributes text)")
        began = time.perf_counter()
        await conn.copy_to_table("bare_import", source=str(path), format="csv", header=True)
        return time.perf_counter() - began
    finally:
        await conn.close()


# The writes that any import of these people has to make, and nothing else: the already parsed, deduplicated
# and sorted rows into subscribers and their confirmed subscriptions, one statement in one transaction.
BARE_WRITES = """
WITH inserted AS (
    INSERT INTO subscribers (email, name, attributes)
    SELECT email, coalesce(name, ''), coalesce(attributes, '{}') FROM import_rows ORDER BY key COLLATE "C"
    RETURNING id
)
INSERT INTO subscriptions (subscriber_id, list_id, status, confirmed_at, source)
SELECT id, $1, 'confirmed', now(), 'import' FROM inserted
"""


async def bare_writes(url: str, path: Path) -> tuple[float, float | None]:
    """Seconds to write the file's people into the product's tables (every index and the reference check)
    with a bare INSERT ... SELECT from a staging table that already holds them parsed, checked and unique:
    the part of an import that one PostgreSQL backend, in one transaction, cannot avoid. With the backend's
    CPU time for that statement (None when it cannot be read)."""
    conn = await asyncpg.connect(url)
    pid = conn.get_server_pid()
    try:
        list_id = await conn.fetchval("SELECT id FROM lists WHERE slug = 'default'")
        async with conn.transaction():
            await conn.execute(Q.import_prepare)
            await conn.execute(Q.import_staging)
            with path.open("rb") as source:
                for chunk in RowParser(source).chunks():
                    await conn.copy_records_to_table("import_rows", records=chunk, columns=COPIED_COLUMNS)
            await conn.execute(
                "DELETE FROM import_rows AS later USING import_rows AS earlier"
                " WHERE later.key = earlier.key AND later.line > earlier.line"
            )
            await conn.execute("ANALYZE import_rows")
            cpu_before, began = cpu_seconds(pid), time.perf_counter()
            await conn.execute(BARE_WRITES, list_id, timeout=3600)
            elapsed, cpu_after = time.perf_counter() - began, cpu_seconds(pid)
            return elapsed, None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    finally:
        await conn.close()


def parse_only(path: Path) -> float:
    """The import's reading and validation alone, without a database: the part that runs in Python."""
    began = time.perf_counter()
    with path.open("rb") as source:
        for _ in RowParser(source).chunks():
            pass
    return time.perf_counter() - began


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user and system) of a process of this machine so far; None if it cannot be read (a
    PostgreSQL server elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    seconds: float
    report: ImportReport
    server_cpu: float | None  # the database backend's CPU time during the import
    client_cpu: float  # this process's CPU time during the import (parsing thread and event loop)


async def service(url: str, path: Path, profile: bool) -> Run:
    # One connection, so that its backend is the one whose CPU time is read.
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    profiler = cProfile.Profile() if profile else None
    async with pool.acquire() as conn:
        pid = conn.get_server_pid()
    try:
        with path.open("rb") as source:
            server_before, client_before = cpu_seconds(pid), time.process_time()
            began = time.perf_counter()
            if profiler:
                profiler.enable()
            report = await import_csv(Database(pool), source, list_slug="default")
            if profiler:
                profiler.disable()
            elapsed = time.perf_counter() - began
            server_after, client_after = cpu_seconds(pid), time.process_time()
        if profiler:
            output = io.StringIO()
            pstats.Stats(profiler, stream=output).sort_stats("cumulative").print_stats(25)
            print(output.getvalue())
        server = None if server_after is None or server_before is None else server_after - server_before
        return Run(elapsed, report, server, client_after - client_before)
    finally:
        await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep-csv", type=Path, help="Write the generated CSV here and keep it.")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the first import (main thread only)."
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        path = args.keep_csv or Path(scratch) / "people.csv"
        began = time.perf_counter()
        bare_path = Path(scratch) / "bare.csv"
        bad = generate(path, bare_path, args.rows)
        size_mb = path.stat().st_size / 1e6
        print(f"generated {args.rows:,} rows ({size_mb:.0f} MB, {bad} bad on purpose) "
              f"in {time.perf_counter() - began:.1f} s")  # fmt: skip

        bare_url = await create_database("bench_import_bare")
        try:
            bare = await baseline(bare_url, bare_path)
        finally:
            await drop_database(bare_url)
        parsing = parse_only(path)
        writes_url = await create_database("bench_import_writes")
        try:
            writes, writes_cpu = await bare_writes(writes_url, path)
        finally:
            await drop_database(writes_url)
        url = await create_database("bench_import")
        try:
            first = await service(url, path, args.profile)
            again = await service(url, path, False)
            conn = await asyncpg.connect(url)
            try:
                stored = await conn.fetchval("SELECT count(*) FROM subscribers")
            finally:
                await conn.close()
        finally:
            await drop_database(url)

    rows = args.rows
    print(f"baseline (bare COPY, unindexed): {rows / bare:>10,.0f} rows/s  ({bare:.2f} s)")
    print(f"parsing and validation alone:    {rows / parsing:>10,.0f} rows/s  ({parsing:.2f} s, no database)")
    print(f"bare writes into the same tables:{rows / writes:>10,.0f} rows/s  ({writes:.2f} s, parsed rows"
          " already staged)")  # fmt: skip
    print(f"  CPU: database backend {writes_cpu:.1f} s" if writes_cpu is not None else "  CPU: unknown")
    for label, run in (("import, fresh database:", first), ("import, same file again:", again)):
        # Only a fresh import makes the bare writes' writes; the repeated one writes nothing new.
        beside_writes = f", {writes / run.seconds:.2f} of the bare writes' rate" if run is first else ""
        print(f"{label:<33}{rows / run.seconds:>10,.0f} rows/s  ({run.seconds:.2f} s)  "
              f"{bare / run.seconds:.3f} of the baseline's rate{beside_writes}")  # fmt: skip
        server = f"{run.server_cpu:.1f} s" if run.server_cpu is not None else "unknown"
        print(f"  CPU: database backend {server}, this process {run.client_cpu:.1f} s")
    for name, run in (("first", first), ("again", again)):
        result = run.report
        print(f"  {name}: inserted {result.inserted:,}, updated {result.updated:,}, "
              f"subscribed {result.subscribed:,}, rejected {result.rejected_total:,}")  # fmt: skip
    print(f"  subscribers stored: {stored:,}")
    print("goal: at least 100,000 rows/s")


if __name__ == "__main__":
    asyncio.run(main())
