"""Sign-up throughput: `newsletter serve` beside a naive baseline, measured in the same run.

    .venv/bin/python bench/subscribe.py [--duration 12] [--warmup 3] [--rounds 2] [--connections 32 128]

For each connection count, wrk (2 threads) POSTs JSON sign-ups, each with an address never used before, to

- the baseline: a bare FastAPI app (bench/baseline_app.py) doing the same three inserts in one asyncpg
  transaction, nothing else, and
- the service: `newsletter serve --no-migrate` with every safeguard on (address validation, both sign-up
  rate limits counted in PostgreSQL, request-id/logging/metrics middleware, JSON logs to a file), the limits
  set so high that they are counted but never reached,

each against its own fresh database migrated with `newsletter migrate`, on the same uvloop + httptools
server settings and the same pool size. Runs alternate baseline and service (ABBA over the rounds) so drift
on a noisy machine hits both. Every measured run follows a warm-up run. The figures are printed as a table
with the service/baseline ratio; afterwards the script checks that every 202 the service answered (by its
own /metrics counter) is exactly one row in `deliveries`. Databases and processes are removed at the end.

Needs PostgreSQL (--admin-url, default postgresql://postgres@127.0.0.1:5432/postgres) and wrk, which is
installed with apt-get when missing. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg

BENCH_DIR = Path(__file__).resolve().parent
LUA_SCRIPT = BENCH_DIR / "subscribe.lua"
HOST = "127.0.0.1"
# Limits so high that every request is counted against them but none is refused.
UNREACHABLE_LIMIT = "100000000"
SERVER_START_SECONDS = 60
STOP_SECONDS = 15
_METRIC_202 = re.compile(
    r'^newsletter_http_requests_total\{(?=[^}]*method="POST")(?=[^}]*route="/subscriptions")'
    r'(?=[^}]*status="202")[^}]*\}\s+([0-9.e+]+)$',
    re.MULTILINE,
)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_us: int
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    errors: dict[str, int]
    statuses: dict[int, int]

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6)

    @property
    def accepted(self) -> int:
        return self.statuses.get(202, 0)

    @property
    def rate_limited(self) -> int:
        return self.statuses.get(429, 0)

    @property
    def non_2xx(self) -> int:
        return sum(count for status, count in self.statuses.items() if not 200 <= status < 300)

    @property
    def socket_errors(self) -> int:
        return sum(self.errors[kind] for kind in ("connect", "read", "write", "timeout"))


@dataclass
class Target:
    name: str
    database: str
    port: int
    health_path: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    results: dict[int, list[WrkResult]] = field(default_factory=dict)
    # Every wrk run against this target, warm-ups included: the database holds the rows of all of them.
    all_runs: list[tuple[int, WrkResult]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def main() -> int:
    args = _arguments()
    # A SIGTERM unwinds like Ctrl-C, so the servers are stopped and the databases dropped either way.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    wrk = _ensure_wrk()
    run_id = secrets.token_hex(4)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="newsletter-bench-")))
        baseline = Target(
            "baseline",
            f"newsletter_bench_{run_id}_baseline",
            _free_port(),
            "/health",
            workdir / "baseline.log",
        )
        service = Target(
            "service",
            f"newsletter_bench_{run_id}_service",
            _free_port(),
            "/health/live",
            workdir / "service.log",
        )
        targets = (baseline, service)
        for target in targets:
            stack.enter_context(_database(args.admin_url, target.database))
            _migrate(args.admin_url, target.database, workdir)
        stack.enter_context(
            _server(baseline, _baseline_command(baseline), _baseline_env(args, baseline), workdir)
        )
        stack.enter_context(_server(service, _service_command(service), _service_env(args, service), workdir))
        print(
            f"sign-up benchmark: {os.cpu_count()} cores, wrk {args.threads} threads, "
            f"{args.warmup:g} s warm-up + {args.duration:g} s measured per run, {args.rounds} round(s), "
            f"pool {args.pool_size}",
            flush=True,
        )
        run = 0
        for connections in args.connections:
            for round_index in range(args.rounds):
                # ABBA: the first target of a round alternates, so slow drift is shared by both.
                order = targets if (run % 2 == 0) else targets[::-1]
                run += 1
                for target in order:
                    prefix = f"r{len(target.all_runs)}"
                    warm = _wrk(wrk, target, connections, args.warmup, args.threads, prefix + "w")
                    target.all_runs.append((connections, warm))
                    result = _wrk(wrk, target, connections, args.duration, args.threads, prefix + "m")
                    target.all_runs.append((connections, result))
                    target.results.setdefault(connections, []).append(result)
                    print(
                        f"  c={connections:<4} round {round_index + 1} {target.name:<8} "
                        f"{result.rps:8.0f} req/s  p99 {result.p99_us / 1000:7.1f} ms  "
                        f"statuses {_statuses(result)}  socket errors {result.socket_errors}",
                        flush=True,
                    )
        print()
        print(_table(args.connections, baseline, service))
        print()
        checks_ok = _check_stored(args.admin_url, baseline, service)
        _check_logs(service)
        if args.json is not None:
            _write_json(args.json, args, baseline, service)
    return 0 if checks_ok else 1


def _exit_on_signal(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=12, help="seconds measured per run (default 12)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of warm-up before each run (3)")
    parser.add_argument("--rounds", type=int, default=2, help="measured runs per target and count (2)")
    parser.add_argument("--connections", type=int, nargs="+", default=[32, 128], help="(32 128)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--pool-size", type=int, default=20, help="database pool size of both apps (20)")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL URL allowed to create databases (BENCH_ADMIN_URL)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.duration <= 0 or args.warmup <= 0 or args.rounds < 1:
        parser.error("--duration and --warmup must be positive and --rounds at least 1")
    if min(args.connections) < args.threads:
        parser.error("every connection count must be at least the number of wrk threads")
    return args


def _ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing; installing it with apt-get", flush=True)
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if os.geteuid() != 0 and shutil.which("sudo"):
        install.insert(0, "sudo")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, check=False, timeout=600).returncode != 0:
        update = [*install[: install.index("apt-get") + 1], "update", "-q"]
        subprocess.run(update, env=env, check=True, timeout=600)
        subprocess.run(install, env=env, check=True, timeout=600)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk could not be installed; install it and run again")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _database_url(admin_url: str, database: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{database}"


@contextmanager
def _database(admin_url: str, name: str) -> Iterator[None]:
    async def execute(statement: str) -> None:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(statement)
        finally:
            await admin.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _migrate(admin_url: str, database: str, workdir: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(admin_url, database),
        "NEWSLETTER_DATA_DIR": str(workdir / "data"),
        "NEWSLETTER_LOG_FORMAT": "json",
    }
    subprocess.run(
        [sys.executable, "-m", "newsletter", "migrate"],
        env=env,
        cwd=workdir,
        check=True,
        capture_output=True,
        timeout=120,
    )


def _service_command(target: Target) -> list[str]:
    return [
        sys.executable, "-m", "newsletter", "serve", "--no-migrate",
        "--host", HOST, "--port", str(target.port),
    ]  # fmt: skip


def _service_env(args: argparse.Namespace, target: Target) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": _database_url(args.admin_url, target.database),
        "NEWSLETTER_LOG_FORMAT": "json",
        "NEWSLETTER_SIGNUP_IP_LIMIT": UNREACHABLE_LIMIT,
        "NEWSLETTER_SIGNUP_ADDRESS_LIMIT": UNREACHABLE_LIMIT,
        "NEWSLETTER_POOL_MIN_SIZE": str(min(2, args.pool_size)),
        "NEWSLETTER_POOL_MAX_SIZE": str(args.pool_size),
        "NEWSLETTER_BASE_URL": target.url,
        "NEWSLETTER_SECRET_KEY": secrets.token_urlsafe(32),
    }


def _baseline_command(target: Target) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH_DIR), "baseline_app:app",
        "--host", HOST, "--port", str(target.port), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--no-server-header", "--log-level", "warning",
    ]  # fmt: skip


def _baseline_env(args: argparse.Namespace, target: Target) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": _database_url(args.admin_url, target.database),
        "BENCH_POOL_MAX_SIZE": str(args.pool_size),
    }


@contextmanager
def _server(target: Target, command: list[str], env: dict[str, str], workdir: Path) -> Iterator[None]:
    """Start a server whose output goes to its log file; stop it (SIGTERM, then SIGKILL) however we leave."""
    log: IO[bytes] = target.log_path.open("wb")
    try:
        target.process = subprocess.Popen(
            command, env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_until_ready(target)
            yield
        finally:
            target.process.send_signal(signal.SIGTERM)
            try:
                target.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                target.process.kill()
                target.process.wait()
    finally:
        log.close()


def _wait_until_ready(target: Target) -> None:
    assert target.process is not None
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if target.process.poll() is not None:
            raise RuntimeError(f"{target.name} exited with {target.process.returncode}:\n{_tail(target)}")
        try:
            with urllib.request.urlopen(target.url + target.health_path, timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{target.name} did not answer within {SERVER_START_SECONDS} s:\n{_tail(target)}")


def _tail(target: Target, lines: int = 30) -> str:
    try:
        return "\n".join(target.log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wrk(wrk: str, target: Target, connections: int, seconds: float, threads: int, prefix: str) -> WrkResult:
    command = [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
        "-s", str(LUA_SCRIPT), target.url, "--", f"{target.name[0]}{prefix}c{connections}",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + 60)
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            data: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return WrkResult(
                requests=data["requests"],
                duration_us=data["duration_us"],
                p50_us=data["p50_us"],
                p90_us=data["p90_us"],
                p99_us=data["p99_us"],
                max_us=data["max_us"],
                errors=data["errors"],
                statuses={int(status): count for status, count in data["statuses"].items()},
            )
    raise RuntimeError(
        f"wrk gave no result (exit {completed.returncode}):\n{completed.stdout}{completed.stderr}"
    )


def _statuses(result: WrkResult) -> str:
    return " ".join(f"{status}:{count}" for status, count in sorted(result.statuses.items())) or "none"


def _summary(results: list[WrkResult]) -> tuple[float, float, int, int, int]:
    """Mean req/s over the rounds, the worst p99 (ms), and the non-2xx, 429 and socket-error totals."""
    return (
        statistics.fmean(result.rps for result in results),
        max(result.p99_us for result in results) / 1000,
        sum(result.non_2xx for result in results),
        sum(result.rate_limited for result in results),
        sum(result.socket_errors for result in results),
    )


def _table(connections: list[int], baseline: Target, service: Target) -> str:
    rows = [
        "| connections | baseline req/s | service req/s | service / baseline (per round) | baseline p99 "
        "| service p99 | baseline non-2xx | service non-2xx (of which 429) | socket errors (b / s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for count in connections:
        b_rps, b_p99, b_bad, _, b_sock = _summary(baseline.results[count])
        s_rps, s_p99, s_bad, s_429, s_sock = _summary(service.results[count])
        ratios.append(s_rps / b_rps)
        # Runs of one round are adjacent in time, so their ratio is the least disturbed by drift.
        per_round = ", ".join(
            f"{s.rps / b.rps:.2f}"
            for b, s in zip(baseline.results[count], service.results[count], strict=True)
        )
        rows.append(
            f"| {count} | {b_rps:,.0f} | {s_rps:,.0f} | {s_rps / b_rps:.2f} ({per_round}) "
            f"| {b_p99:.1f} ms | {s_p99:.1f} ms | {b_bad} | {s_bad} ({s_429}) | {b_sock} / {s_sock} |"
        )
    unexpected = sum(
        result.non_2xx - result.rate_limited for results in service.results.values() for result in results
    )
    verdict = "met" if min(ratios) >= 0.8 and unexpected == 0 else "NOT met"
    rows.append("")
    rows.append(
        f"req/s: mean of the rounds; p99: the worst round. Goal (service >= 0.8 x baseline at every count, "
        f"no non-2xx but 429): {verdict} (lowest ratio {min(ratios):.2f}, unexpected non-2xx {unexpected})."
    )
    return "\n".join(rows)


def _served_202(service: Target) -> int:
    """The service's own count of 202 answers to POST /subscriptions, once it has finished every request."""
    previous = -1
    for _ in range(50):
        with urllib.request.urlopen(service.url + "/metrics", timeout=5) as reply:
            text = reply.read().decode()
        count = sum(int(float(value)) for value in _METRIC_202.findall(text))
        if count == previous:
            return count
        previous = count
        time.sleep(0.3)
    return previous


def _check_stored(admin_url: str, baseline: Target, service: Target) -> bool:
    """Every 202 is one `deliveries` row, stored once (wrk misses the answers in flight when it stops)."""

    async def counts(database: str) -> tuple[int, int, int]:
        conn = await asyncpg.connect(_database_url(admin_url, database))
        try:
            row = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM deliveries WHERE kind = 'confirmation') AS deliveries,"
                " (SELECT count(DISTINCT lower(recipient)) FROM deliveries) AS recipients,"
                " (SELECT count(*) FROM subscribers) AS subscribers"
            )
            assert row is not None
            return row["deliveries"], row["recipients"], row["subscribers"]
        finally:
            await conn.close()

    served = _served_202(service)
    ok = True
    for target, answered in ((baseline, None), (service, served)):
        deliveries, recipients, subscribers = asyncio.run(counts(target.database))
        received = sum(result.accepted for _, result in target.all_runs)
        in_flight = sum(connections for connections, _ in target.all_runs)
        once = deliveries == recipients == subscribers
        if answered is None:
            # The baseline keeps no count of its own: bound the answers wrk did not wait for.
            good = once and received <= deliveries <= received + in_flight
            detail = f"wrk received {received} x 202 (at most {in_flight} more were in flight at run ends)"
        else:
            good = once and deliveries == answered and received <= answered
            detail = f"the service answered {answered} x 202 (its /metrics), wrk received {received}"
        ok = ok and good
        print(
            f"stored check, {target.name}: {detail}; deliveries rows {deliveries}, distinct recipients "
            f"{recipients}, subscribers {subscribers}: {'OK' if good else 'MISMATCH'}"
        )
    return ok


def _check_logs(service: Target) -> None:
    """The service logged one JSON event per request and no errors; say so, or show what went wrong."""
    levels: dict[str, int] = {}
    requests = 0
    for line in service.log_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            levels["unparsed"] = levels.get("unparsed", 0) + 1
            continue
        levels[event.get("level", "?")] = levels.get(event.get("level", "?"), 0) + 1
        requests += event.get("event") == "request"
    print(f"service log: {requests} request events; events by level {dict(sorted(levels.items()))}")
    if any(level not in ("info", "debug") for level in levels):
        print(_tail(service))


def _write_json(path: Path, args: argparse.Namespace, baseline: Target, service: Target) -> None:
    document = {
        "cores": os.cpu_count(),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "pool_size": args.pool_size,
        "runs": {
            target.name: {
                str(count): [result.__dict__ | {"rps": result.rps} for result in results]
                for count, results in target.results.items()
            }
            for target in (baseline, service)
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
