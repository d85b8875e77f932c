"""What every resilience scenario measures: emails lost, duplicates, how many were in flight, time to recover.

A scenario sends one issue to 20,000 people through real worker processes, breaks something mid-send, and then
holds the outcome against the ledger (the deliveries table): nobody is missing, every extra copy is an attempt
the ledger recorded, and there are no more extra copies than emails in flight when the fault struck.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from tests.harness import SMTPHandler, SMTPServer

PEOPLE = 20_000
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "resilience.json"


@dataclass
class CountingSMTPHandler(SMTPHandler):
    """Counts the copies each recipient receives (no message kept: 20,000 of them add up) and can stall.

    While stalled, new sessions hang after the greeting and envelopes hang at RCPT; a message whose data was
    already on its way is taken (it counts as received) but its reply is held back until the stall ends, as a
    mail server that queued a message and then hung would. Those held replies are the emails in flight.
    """

    copies: Counter[str] = field(default_factory=Counter)
    stalled_until: float = 0.0
    held_replies: int = 0
    # (messages, seconds): once it has taken that many messages, the server stalls for that long.
    stall_after: tuple[int, float] | None = None

    @property
    def stalled(self) -> bool:
        return time.monotonic() < self.stalled_until

    async def _while_stalled(self) -> None:
        while self.stalled:
            await asyncio.sleep(0.05)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        await self._while_stalled()
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        await self._while_stalled()
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.copies.update(envelope.rcpt_tos)
        if self.stalled:
            self.held_replies += 1
            await self._while_stalled()
        elif self.stall_after is not None and self.copies.total() >= self.stall_after[0]:
            self.stalled_until = time.monotonic() + self.stall_after[1]
            self.stall_after = None
        return "250 2.0.0 Ok: queued"


@dataclass
class Figures:
    """One scenario's outcome, printed and kept in bench/results/resilience.json."""

    scenario: str
    people: int
    lost: int
    duplicates: int
    in_flight: int
    recovery_seconds: float
    send_seconds: float
    retried_attempts: int
    reclaimed_leases: int
    notes: dict[str, Any] = field(default_factory=dict)

    def report(self) -> None:
        line = (
            f"[resilience] {self.scenario}: lost={self.lost} duplicates={self.duplicates} "
            f"in_flight={self.in_flight} recovery={self.recovery_seconds:.2f}s send={self.send_seconds:.1f}s "
            f"retried_attempts={self.retried_attempts} reclaimed={self.reclaimed_leases} {self.notes or ''}"
        )
        print(line)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        try:
            results = json.loads(RESULTS.read_text())
        except (OSError, ValueError):
            results = {}
        results[self.scenario] = {
            **asdict(self),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        }
        # Written aside and renamed: another test session may be reading the file at the same moment.
        partial = RESULTS.with_name(f".{RESULTS.name}.{os.getpid()}")
        partial.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        partial.replace(RESULTS)


async def clock(conn: asyncpg.Connection) -> datetime:
    """The database's clock: fault times are compared with the ledger's timestamps."""
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    return now


async def resumed_after(conn: asyncpg.Connection, issue_id: int, moment: datetime) -> float:
    """Seconds from `moment` until the first delivery settled after it: sending was going again."""
    first: datetime | None = await conn.fetchval(
        "SELECT min(sent_at) FROM deliveries WHERE issue_id = $1 AND sent_at > $2", issue_id, moment
    )
    assert first is not None, "nothing was sent after the fault"
    return (first - moment).total_seconds()


async def settled_after(conn: asyncpg.Connection, ids: set[int], moment: datetime) -> float:
    """Seconds from `moment` until the last of `ids` was sent."""
    last: datetime | None = await conn.fetchval(
        "SELECT max(sent_at) FROM deliveries WHERE id = ANY($1::bigint[])", list(ids)
    )
    return 0.0 if last is None else max(0.0, (last - moment).total_seconds())


async def check_send(
    conn: asyncpg.Connection,
    issue_id: int,
    people: list[str],
    received: Counter[str],
    *,
    in_flight: int,
) -> tuple[int, int, list[asyncpg.Record]]:
    """Assert nothing was lost and every duplicate is bounded and in the ledger; returns (lost, duplicates,
    the ledger rows of the duplicated deliveries)."""
    strangers = set(received) - set(people)
    assert not strangers, f"emails to people who were never subscribers: {sorted(strangers)[:5]}"
    lost = sum(1 for person in people if received[person] == 0)
    duplicates = sum(received.values()) - (len(people) - lost)

    ledger = {
        row["recipient"]: row
        for row in await conn.fetch(
            "SELECT id, recipient, status, attempts, reclaimed FROM deliveries WHERE issue_id = $1", issue_id
        )
    }
    assert len(ledger) == len(people)
    unsent = Counter(row["status"] for row in ledger.values() if row["status"] != "sent")
    assert not unsent, f"the ledger says not everybody was sent the issue: {dict(unsent)}"
    counts = await conn.fetchrow(
        "SELECT status, sent_count, pending_count FROM issues WHERE id = $1", issue_id
    )
    assert tuple(counts) == ("sent", len(people), 0)
    assert lost == 0, f"{lost} people never received the issue"

    twice = [ledger[address] for address, count in received.items() if count > 1]
    for row in twice:
        copies = received[row["recipient"]]
        assert row["attempts"] >= copies, (
            f"{row['recipient']} received {copies} copies but the ledger shows {row['attempts']} attempts"
        )
    assert duplicates <= in_flight, f"{duplicates} duplicates, but only {in_flight} emails were in flight"
    return lost, duplicates, twice


async def ledger_totals(conn: asyncpg.Connection, issue_id: int) -> tuple[int, int]:
    """Attempts beyond the first, and leases taken back from a worker, over the whole send."""
    row = await conn.fetchrow(
        "SELECT coalesce(sum(attempts - 1), 0) AS retried, coalesce(sum(reclaimed), 0) AS reclaimed "
        "FROM deliveries WHERE issue_id = $1",
        issue_id,
    )
    assert row is not None
    return int(row["retried"]), int(row["reclaimed"])


def counter(server: SMTPServer) -> CountingSMTPHandler:
    """The counting handler of an SMTP server started by the `counting_smtp` fixture."""
    assert isinstance(server.handler, CountingSMTPHandler)
    return server.handler
