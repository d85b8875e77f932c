"""The delivery worker: claims due deliveries, sends them outside any transaction, records the outcomes.

Any number of workers, in any number of processes, run side by side; they coordinate only through the
`deliveries` table (row locks with SKIP LOCKED, and leases that expire when a worker dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import asyncpg
import structlog

from newsletter import telemetry
from newsletter.config import Settings
from newsletter.db.queries import query
from newsletter.domain.tokens import Token
from newsletter.services import emails
from newsletter.transports.base import Failed, OutgoingEmail, SendResult, Sent, Transport
from newsletter.worker.retry import RetryPolicy

log = structlog.get_logger(__name__)

WAKE_CHANNEL = "newsletter_deliveries"
# PostgreSQL errors and lost connections both mean "the database is not answering right now".
DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


@dataclass(slots=True)
class Outcome:
    claimed: asyncpg.Record
    status: str
    error: str | None = None
    provider_id: str | None = None
    delay: float = 0.0
    # The recipient's server refused the address for good: it goes on the suppression list.
    suppress: bool = False


@dataclass(slots=True)
class Batch:
    outcomes: list[Outcome] = field(default_factory=list)
    emails: list[OutgoingEmail] = field(default_factory=list)
    claimed: dict[int, asyncpg.Record] = field(default_factory=dict)


class DeliveryWorker:
    def __init__(self, pool: asyncpg.Pool, transport: Transport, settings: Settings) -> None:
        self.pool = pool
        self.transport = transport
        self.settings = settings
        self.retry = RetryPolicy(
            settings.retry_base_seconds, settings.retry_max_seconds, settings.max_attempts
        )
        self._sender = settings.sender_address
        self._envelope_from = self._sender.addr_spec
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until `stopping` is set; a batch in flight is always finished and recorded first."""
        log.info("worker started", transport=self.settings.email.scheme)
        self._closing.clear()
        listener = asyncio.create_task(self._listen())
        next_housekeeping = 0.0
        try:
            while not stopping.is_set():
                try:
                    if time.monotonic() >= next_housekeeping:
                        await self.housekeeping()
                        next_housekeeping = time.monotonic() + min(5.0, self.settings.lease_seconds / 4)
                    if await self.dispatch_once():
                        continue
                except DATABASE_ERRORS as error:
                    log.warning("database unavailable, retrying", error=str(error))
                    await _sleep_unless(stopping, 1.0)
                    continue
                self._wake.clear()
                await _wait_any(stopping, self._wake, seconds=self.settings.poll_interval_seconds)
        finally:
            # The listener stops by itself within a second; cancelling it could strand its connection.
            self._closing.set()
            await listener
            await self.transport.close()
            log.info("worker stopped")

    async def dispatch_once(self) -> int:
        """Claim one batch, send it and record the outcomes; returns how many deliveries were claimed."""
        rows = await self.pool.fetch(
            query("claim_deliveries"), self.settings.worker_batch_size, self.settings.lease_seconds
        )
        if not rows:
            return 0
        batch = await self._prepare(rows)
        if batch.emails:
            started = time.monotonic()
            results = await self.transport.send_batch(batch.emails)
            telemetry.SEND_LATENCY.observe(time.monotonic() - started)
            for email, result in zip(batch.emails, results, strict=True):
                batch.outcomes.append(self._settle(batch.claimed[email.delivery_id], result))
        await self._record(batch.outcomes)
        return len(rows)

    async def drain(self) -> int:
        """Send everything that is due now; for tests and one-off runs."""
        total = 0
        while sent := await self.dispatch_once():
            total += sent
        return total

    async def housekeeping(self) -> None:
        reclaimed = await self.pool.fetch(query("reclaim_expired_leases"))
        if reclaimed:
            telemetry.LEASES_RECLAIMED.inc(len(reclaimed))
            log.warning("expired leases reclaimed", deliveries=len(reclaimed))
        await self.pool.execute(query("purge_rate_limits"))
        stats = await self.pool.fetchrow(query("queue_stats"))
        if stats is not None:
            telemetry.QUEUE_DEPTH.set(stats["depth"])
            telemetry.QUEUE_OLDEST_AGE.set(stats["oldest_age"])

    async def _prepare(self, rows: Sequence[asyncpg.Record]) -> Batch:
        batch = Batch()
        confirmations: list[tuple[asyncpg.Record, Token]] = []
        for row in rows:
            batch.claimed[row["id"]] = row
            if row["suppressed"]:
                batch.outcomes.append(Outcome(row, "suppressed", "address is suppressed"))
            elif row["kind"] == "confirmation":
                if row["subscription_status"] != "pending":
                    # Confirmed by an earlier email, unsubscribed or erased since this one was queued.
                    batch.outcomes.append(Outcome(row, "cancelled", "subscription no longer pending"))
                else:
                    confirmations.append((row, Token.generate()))
            else:
                batch.outcomes.append(Outcome(row, "failed", f"unknown kind {row['kind']}"))
        if confirmations:
            # Tokens are made at send time so that only their hashes are ever stored.
            await self.pool.execute(
                query("insert_confirmation_tokens"),
                [token.digest for _, token in confirmations],
                [row["subscriber_id"] for row, _ in confirmations],
                [row["list_id"] for row, _ in confirmations],
                self.settings.confirmation_ttl_hours,
            )
            batch.emails.extend(self._confirmation_email(row, token) for row, token in confirmations)
        return batch

    def _confirmation_email(self, row: asyncpg.Record, token: Token) -> OutgoingEmail:
        link = f"{self.settings.base_url}/subscriptions/confirm?{urlencode({'token': token.value})}"
        rendered = emails.render(
            "confirmation",
            list_name=row["list_name"] or "our newsletter",
            link=link,
            valid_hours=round(self.settings.confirmation_ttl_hours),
        )
        message = emails.to_mime(rendered, sender=self._sender, recipient=row["recipient"])
        return OutgoingEmail(row["id"], self._envelope_from, row["recipient"], message)

    def _settle(self, row: asyncpg.Record, result: SendResult) -> Outcome:
        if isinstance(result, Sent):
            return Outcome(row, "sent", provider_id=result.provider_message_id)
        assert isinstance(result, Failed)
        telemetry.TRANSPORT_ERRORS.labels(permanent=str(result.permanent).lower()).inc()
        delay = None
        if not result.permanent:
            delay = self.retry.delay(row["attempts"], result.retry_after)
            if row["age_seconds"] > self.settings.retry_max_age_seconds:
                delay = None
        if delay is None:
            return Outcome(row, "failed", result.error, suppress=result.recipient_rejected)
        telemetry.DELIVERY_RETRIES.inc()
        return Outcome(row, "queued", result.error, delay=delay)

    async def _record(self, outcomes: list[Outcome]) -> None:
        """Write the outcomes, retrying while the database is away: an unrecorded send would be sent again."""
        deadline = time.monotonic() + self.settings.lease_seconds
        while True:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await conn.execute(
                        query("record_outcomes"),
                        [o.claimed["id"] for o in outcomes],
                        [o.claimed["attempts"] for o in outcomes],
                        [o.status for o in outcomes],
                        [o.error for o in outcomes],
                        [o.provider_id for o in outcomes],
                        [o.delay for o in outcomes],
                    )
                    rejected = [o for o in outcomes if o.suppress]
                    if rejected:
                        await conn.execute(
                            query("suppress_addresses"),
                            [o.claimed["recipient"] for o in rejected],
                            [o.error or "" for o in rejected],
                            "hard_bounce",
                        )
                break
            except DATABASE_ERRORS as error:
                if time.monotonic() > deadline:
                    raise
                log.warning("cannot record outcomes yet, retrying", error=str(error))
                await asyncio.sleep(0.5)
        self._log_batch(outcomes)

    def _log_batch(self, outcomes: list[Outcome]) -> None:
        counts = Counter(outcome.status for outcome in outcomes)
        for outcome in outcomes:
            telemetry.DELIVERIES.labels(kind=outcome.claimed["kind"], status=outcome.status).inc()
            if outcome.claimed["kind"] != "newsletter":
                # Transactional emails are few: one line each, carrying the id of the request that caused it.
                log.info(
                    "email settled",
                    delivery_id=outcome.claimed["id"],
                    kind=outcome.claimed["kind"],
                    status=outcome.status,
                    error=outcome.error,
                    request_id=outcome.claimed["request_id"],
                )
        log.info("delivery batch", deliveries=len(outcomes), **counts)

    async def _listen(self) -> None:
        """Wake on NOTIFY; reconnect if the connection drops (polling covers the gap)."""

        def wake(*_: Any) -> None:
            self._wake.set()

        while not self._closing.is_set():
            try:
                conn = await self.pool.acquire()
            except DATABASE_ERRORS:
                await _sleep_unless(self._closing, 1.0)
                continue
            try:
                await conn.add_listener(WAKE_CHANNEL, wake)
                while not self._closing.is_set() and not conn.is_closed():
                    await _sleep_unless(self._closing, 1.0)
            except DATABASE_ERRORS:
                pass
            finally:
                with contextlib.suppress(*DATABASE_ERRORS):
                    if not conn.is_closed():
                        await conn.remove_listener(WAKE_CHANNEL, wake)
                with contextlib.suppress(*DATABASE_ERRORS):
                    await self.pool.release(conn)


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)


async def _wait_any(first: asyncio.Event, second: asyncio.Event, *, seconds: float) -> None:
    waiters = [asyncio.create_task(first.wait()), asyncio.create_task(second.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
