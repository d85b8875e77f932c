"""Webhook dispatch: signed deliveries per second to one local receiver, beside bare HTTP clients.

    python bench/webhooks.py [--events 100000] [--concurrency 8]

One receiver process (tests/receiver.py's handler, on uvloop) verifies every signature with the Standard
Webhooks library and counts the webhook-ids it receives, so that each phase is checked, not only timed:

1. httpx: a bare `httpx.AsyncClient` posts N signed bodies, `concurrency` requests at a time.
2. aiohttp: a bare `aiohttp.ClientSession` does the same.
   Both build and sign each body in the loop (the product's `payload` and `Signer`), with the same event data
   as the product's, so the bodies are the same size.
3. newsletter: N events inserted set-based (one `INSERT ... SELECT generate_series`) into `events`, for one
   active endpoint subscribed to their type (the trigger makes the N deliveries in the same statement); a
   `newsletter worker` process, started beforehand and idle, delivers them with
   NEWSLETTER_WEBHOOK_CONCURRENCY and NEWSLETTER_WEBHOOK_ENDPOINT_CONCURRENCY set to `concurrency`.
   Deliveries per second from the insert's commit until the last delivery was recorded (the database's clock),
   then the ledger is checked: every webhook_deliveries row delivered.

The bench's own event loop runs on uvloop, as the worker's does.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
import uvloop
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.receiver import Receiver

from bench.common import create_database, drop_database, newsletter_command, newsletter_env
from newsletter.db.database import Database
from newsletter.domain.webhooks import Signer, WebhookUrl, message_id, payload
from newsletter.services.integrations.webhooks import EndpointChange, create_endpoint

EVENT_TYPE = "subscriber.created"
# The product's events and the baselines' bodies carry the same data (keys in jsonb's order).
EVENTS_SQL = """
INSERT INTO events (type, address, data)
SELECT 'subscriber.created', 'reader' || n || '@example.com',
       jsonb_build_object('subscriber_id', n, 'email', 'reader' || n || '@example.com',
                          'name', 'Reader ' || n, 'status', 'active')
FROM generate_series(1, $1) AS n
"""


def event_data(n: int) -> dict[str, Any]:
    return {"name": f"Reader {n}", "email": f"reader{n}@example.com", "status": "active", "subscriber_id": n}


# -- the receiver, a process of its own -------------------------------------------------------------------


class CountingReceiver(Receiver):
    """The tests' receiver, counting what it received instead of keeping it (a few hundred MB at 100,000)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: Counter[str] = Counter()
        self.verified = 0
        self.body_bytes = 0
        self.cpu_at_reset = time.process_time()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = await super().handle(request)
        # Its own record: nothing awaits between the append and the return with the default answer.
        item = self.received.pop()
        self.ids[item.headers.get("webhook-id", "")] += 1
        self.verified += item.verified
        self.body_bytes += len(item.body)
        return response

    async def stats(self, request: web.Request) -> web.StreamResponse:
        received = self.ids.total()
        return web.json_response(
            {
                "received": received,
                "unique": len(self.ids),
                "duplicates": received - len(self.ids),
                "verified": self.verified,
                "body_bytes": self.body_bytes,
                "cpu_seconds": time.process_time() - self.cpu_at_reset,
            }
        )

    async def reset(self, request: web.Request) -> web.StreamResponse:
        """Forget what was received and take the secret to verify with (the request's body)."""
        self.secret = (await request.text()) or None
        self.ids.clear()
        self.verified = self.body_bytes = 0
        self.cpu_at_reset = time.process_time()
        return web.Response(status=204)


async def serve_receiver() -> None:
    receiver = CountingReceiver()
    app = web.Application()
    app.router.add_post("/hooks", receiver.handle)
    app.router.add_get("/stats", receiver.stats)
    app.router.add_post("/reset", receiver.reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    server = site._server
    assert server is not None
    print(server.sockets[0].getsockname()[1], flush=True)  # type: ignore[union-attr]
    await asyncio.Event().wait()


class ReceiverProcess:
    """The receiver's process, and a session to ask it what it received."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-receiver"], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def _control(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(f"http://127.0.0.1:{self.port}")
        return self._session

    async def reset(self, secret: str) -> None:
        async with self._control().post("/reset", data=secret) as response:
            response.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        async with self._control().get("/stats") as response:
            response.raise_for_status()
            found: dict[str, Any] = await response.json()
            return found

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        self.process.terminate()
        self.process.wait()


# -- the phases --------------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    seconds: float
    events: int
    receiver: dict[str, Any]
    sender_cpu: float
    machine_busy: float
    notes: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def busy_since(start: tuple[int, int]) -> float:
    """Cores kept busy since `start`, on average (2.0: both cores of this machine all the time)."""
    busy, total = machine_ticks()
    return (busy - start[0]) / max(1, total - start[1]) * (os.cpu_count() or 1)


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Send = Callable[[bytes, dict[str, str]], Awaitable[int]]


async def post_all(send: Send, secret: str, events: int, concurrency: int) -> None:
    """Post `events` signed bodies, `concurrency` at a time; each must be answered 2xx."""
    signer = Signer(secret)
    numbers = itertools.count(1)
    created_at = datetime.now(UTC)

    async def lane() -> None:
        for n in numbers:
            if n > events:
                return
            body = payload(n, EVENT_TYPE, created_at, event_data(n))
            headers = signer.headers(message_id(n), datetime.now(UTC), body)
            headers["Content-Type"] = "application/json"
            status = await send(body, headers)
            assert 200 <= status < 300, f"the receiver answered {status}"

    await asyncio.gather(*(lane() for _ in range(concurrency)))


async def bare_client(
    name: str, receiver: ReceiverProcess, secret: str, events: int, concurrency: int
) -> Phase:
    await receiver.reset(secret)
    ticks = machine_ticks()
    cpu = time.process_time()
    began = time.perf_counter()
    if name == "httpx":
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits) as client:

            async def send_httpx(body: bytes, headers: dict[str, str]) -> int:
                return (await client.post(receiver.url, content=body, headers=headers)).status_code

            await post_all(send_httpx, secret, events, concurrency)
    else:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def send_aiohttp(body: bytes, headers: dict[str, str]) -> int:
                async with session.post(receiver.url, data=body, headers=headers) as response:
                    await response.read()
                    return response.status

            await post_all(send_aiohttp, secret, events, concurrency)
    seconds = time.perf_counter() - began
    return Phase(
        f"bare {name}", seconds, events, await receiver.stats(), time.process_time() - cpu, busy_since(ticks)
    )


async def wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, f"the worker exited; see {log}"
        assert time.monotonic() < deadline, f"the worker did not log {text!r}; see {log}"
        await asyncio.sleep(0.05)


async def newsletter_worker(
    url: str, receiver: ReceiverProcess, secret: str, events: int, concurrency: int, log: Path, workers: int
) -> Phase:
    await receiver.reset(secret)
    conn = await asyncpg.connect(url)
    data_dir = tempfile.mkdtemp(prefix="newsletter-bench-")
    env = newsletter_env(
        url,
        NEWSLETTER_DATA_DIR=data_dir,
        NEWSLETTER_WEBHOOK_ALLOW_PRIVATE="true",
        NEWSLETTER_WEBHOOK_CONCURRENCY=str(concurrency),
        NEWSLETTER_WEBHOOK_ENDPOINT_CONCURRENCY=str(concurrency),
    )
    log.write_bytes(b"")
    # `--workers` processes share the endpoint's limit of requests in flight (counted in the database).
    logs = [log.with_suffix(f".{n}.log") if n else log for n in range(workers)]
    started = []
    for worker_log in logs:
        worker_log.write_bytes(b"")
        with worker_log.open("ab") as output:
            started.append(
                subprocess.Popen(
                    newsletter_command("worker"), env=env, stdout=output, stderr=subprocess.STDOUT
                )
            )
    try:
        for worker, worker_log in zip(started, logs, strict=True):
            await wait_for_line(worker_log, "webhook dispatcher started", worker)
        await asyncio.sleep(0.5)  # their NOTIFY listeners are up
        ticks = machine_ticks()
        cpu = sum(process_cpu(worker.pid) for worker in started)
        began = time.perf_counter()
        await conn.execute(EVENTS_SQL, events)
        committed: datetime = await conn.fetchval("SELECT clock_timestamp()")
        inserted = time.perf_counter() - began
        deadline = time.monotonic() + max(300, events / 100)
        while (await receiver.stats())["unique"] < events or await conn.fetchval(
            "SELECT EXISTS (SELECT FROM webhook_deliveries WHERE status IN ('queued', 'sending'))"
        ):
            assert all(worker.poll() is None for worker in started), f"a worker exited; see {log}"
            if time.monotonic() > deadline:
                counts = await conn.fetch("SELECT status, count(*) FROM webhook_deliveries GROUP BY status")
                raise AssertionError(f"not delivered in time: {[tuple(row) for row in counts]}")
            await asyncio.sleep(0.25)
        sender_cpu = sum(process_cpu(worker.pid) for worker in started) - cpu
        busy = busy_since(ticks)
        ledger = await conn.fetchrow(
            "SELECT count(*) AS rows, count(*) FILTER (WHERE status = 'delivered') AS delivered,"
            " coalesce(sum(attempts), 0) AS attempts, max(delivered_at) AS last FROM webhook_deliveries"
        )
        assert ledger is not None
        seconds = (ledger["last"] - committed).total_seconds()
        stats = await receiver.stats()
    finally:
        for worker in started:
            worker.terminate()
        for worker in started:
            worker.wait(timeout=60)
        await conn.close()
    notes = (
        f"insert of the {events:,} events and their deliveries: {inserted:.2f} s; ledger: "
        f"{ledger['delivered']:,}/{ledger['rows']:,} delivered, {ledger['attempts']:,} attempts"
    )
    assert ledger["rows"] == ledger["delivered"] == events, notes
    name = "newsletter worker" + (f" x{workers}" if workers > 1 else "")
    return Phase(name, seconds, events, stats, sender_cpu, busy, notes)


def report(phases: list[Phase], events: int, concurrency: int) -> None:
    print(f"\nWebhook dispatch of {events:,} events to one local receiver, {concurrency} requests in flight")
    for phase in phases:
        got = phase.receiver
        print(
            f"  {phase.name + ':':19} {phase.rate:8,.0f} deliveries/s ({phase.seconds:6.2f} s); receiver: "
            f"{got['unique']:,} unique ids, {got['duplicates']:,} duplicates, {got['verified']:,} verified, "
            f"{got['body_bytes'] / max(1, got['received']):.0f} bytes a body; CPU s: sender "
            f"{phase.sender_cpu:.1f}, receiver {got['cpu_seconds']:.1f}; cores busy {phase.machine_busy:.2f}"
        )
        if phase.notes:
            print(f"  {'':19} {phase.notes}")
    by_name = {phase.name: phase for phase in phases}
    product = next((phase for phase in phases if phase.name.startswith("newsletter worker")), None)
    if product is not None:
        for baseline in ("bare httpx", "bare aiohttp"):
            if baseline in by_name:
                print(f"  ratio newsletter / {baseline}: {product.rate / by_name[baseline].rate:.2f}")


def check(phase: Phase) -> None:
    got = phase.receiver
    assert got["unique"] == phase.events, f"{phase.name}: {got['unique']} of {phase.events} ids received"
    assert got["verified"] == got["received"], (
        f"{phase.name}: {got['received'] - got['verified']} not verified"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight, for every client")
    parser.add_argument("--only", choices=["httpx", "aiohttp", "newsletter"], action="append")
    parser.add_argument("--workers", type=int, default=1, help="newsletter worker processes (scale-out)")
    parser.add_argument("--serve-receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver:
        await serve_receiver()
        return
    log = Path("bench/results")
    log.mkdir(parents=True, exist_ok=True)
    url = await create_database("newsletter_bench_webhooks")
    receiver = ReceiverProcess()
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            endpoint = await create_endpoint(
                Database(pool), EndpointChange(url=WebhookUrl.parse(receiver.url), events=[EVENT_TYPE])
            )
        finally:
            await pool.close()
        secret: str = endpoint["secret"]
        phases = []
        for name in args.only or ["httpx", "aiohttp", "newsletter"]:
            if name == "newsletter":
                phase = await newsletter_worker(
                    url, receiver, secret, args.events, args.concurrency, log / "webhooks.log", args.workers
                )
            else:
                phase = await bare_client(name, receiver, secret, args.events, args.concurrency)
            check(phase)
            phases.append(phase)
        report(phases, args.events, args.concurrency)
        (log / "webhooks.json").write_text(
            json.dumps([{**vars(phase), "rate": phase.rate} for phase in phases], indent=2) + "\n"
        )
    finally:
        await receiver.stop()
        await drop_database(url)


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
