"""The delivery worker: claim -> compose -> send -> record.

It claims due deliveries, has the composer (services/sending/compose.py) make their messages, sends them
outside any transaction, and records the outcomes.

Any number of workers, in any number of processes, run side by side; they coordinate only through the
database (row locks with SKIP LOCKED, and leases that expire when a worker dies). Within a process, a few
lanes each run claim -> send -> record, so the mail server stays busy while another lane talks to PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import structlog

from newsletter import telemetry, tracing
from newsletter.config import Settings
from newsletter.db.database import DATABASE_ERRORS, Database
from newsletter.db.queries import Q
from newsletter.db.wake import CHANNEL, listen, sleep_unless
from newsletter.domain.tokens import Token
from newsletter.domain.vocabulary import DeliveryKind, DeliveryStatus, IssueStatus, SuppressionReason
from newsletter.services.automations.sequences import sweep
from newsletter.services.compliance.privacy import purge_unconfirmed
from newsletter.services.integrations.events import events_written, trim_events
from newsletter.services.sending.compose import Composer, Copy, MessageTemplate
from newsletter.services.sending.issues import start_due_issues
from newsletter.transports.base import LEASE_EXPIRED, Failed, OutgoingEmail, SendResult, Sent, Transport
from newsletter.worker.retry import RetryPolicy

log = structlog.get_logger(__name__)

SENDING_SHARE_OF_LEASE = 0.75
# A claim reads a window of ids behind an issue's cursor; a window holding none of the issue's deliveries
# (other emails queued during its fan-out) claims nothing but moves the cursor, and the next claim goes on.
EMPTY_WINDOWS_PER_CLAIM = 20


@dataclass(slots=True)
class Outcome:
    claimed: asyncpg.Record
    status: DeliveryStatus
    error: str | None = None
    provider_id: str | None = None
    delay: float = 0.0
    # The recipient's server refused the address for good: it goes on the suppression list.
    suppress: bool = False
    # False for an email that was claimed but not sent at all: its claim does not count as an attempt.
    tried: bool = True


@dataclass(slots=True)
class Batch:
    outcomes: list[Outcome] = field(default_factory=list)
    emails: list[OutgoingEmail] = field(default_factory=list)
    claimed: dict[int, asyncpg.Record] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IssueTemplate:
    version: datetime
    template: MessageTemplate


class DeliveryWorker:
    def __init__(self, db: Database, transport: Transport, settings: Settings) -> None:
        self.db = db
        self.pool = db.pool
        self.transport = transport
        self.settings = settings
        self.composer = Composer(settings)
        self.retry = RetryPolicy(
            settings.retry_base_seconds, settings.retry_max_seconds, settings.max_attempts
        )
        self._issues: dict[int, IssueTemplate] = {}
        self._steps: dict[int, IssueTemplate] = {}
        self._wakers: list[asyncio.Event] = []
        self._closing = asyncio.Event()
        self._next_purge = 0.0
        # Messages per second allowed on this transport, shared with every worker through the database.
        scheme = settings.email.scheme
        self._send_rates = {
            key: rate
            for key, rate in (
                (f"{scheme}:second", settings.send_rate_per_second),
                (
                    f"{scheme}:hour",
                    settings.send_rate_per_hour / 3600 if settings.send_rate_per_hour else None,
                ),
            )
            if rate
        }

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until `stopping` is set; batches in flight are always finished and recorded first."""
        log.info(
            "worker started", transport=self.settings.email.scheme, lanes=self.settings.worker_concurrency
        )
        self._closing.clear()
        self._wakers = [asyncio.Event() for _ in range(self.settings.worker_concurrency)]
        listener = asyncio.create_task(self._listen())
        keeper = asyncio.create_task(self._keep_house())
        try:
            await asyncio.gather(*(self._lane(stopping, waker) for waker in self._wakers))
        finally:
            # These stop by themselves within a second; cancelling them could strand a connection.
            self._closing.set()
            await asyncio.gather(listener, keeper)
            await self.transport.close()
            log.info("worker stopped")

    async def _lane(self, stopping: asyncio.Event, waker: asyncio.Event) -> None:
        while not stopping.is_set():
            waker.clear()
            try:
                if await self.dispatch_once():
                    continue
            except DATABASE_ERRORS as error:
                log.warning("database unavailable, retrying", error=str(error))
                await sleep_unless(stopping, 1.0)
                continue
            except Exception:
                log.exception("delivery lane failed; its leases will be reclaimed")
                await sleep_unless(stopping, 1.0)
                continue
            await _wait_any(stopping, waker, seconds=self.settings.poll_interval_seconds)

    async def dispatch_once(self) -> int:
        """Claim one batch, send it and record the outcomes; returns how many deliveries were claimed."""
        limit = await self._reserve_rate(self.settings.worker_batch_size)
        if limit == 0:
            return 0
        # Sending ends (nothing started, nothing left running) at three quarters of the lease, counted from
        # before the claim, so that the outcomes are recorded while the lease holds. Past the lease the rows
        # may be reclaimed and given to another worker: an email this one sent then, or sent but recorded
        # too late, would go out twice.
        send_until = time.monotonic() + SENDING_SHARE_OF_LEASE * self.settings.lease_seconds
        rows = await self.pool.fetch(Q.claim_deliveries, limit, self.settings.lease_seconds)
        for _ in range(EMPTY_WINDOWS_PER_CLAIM):
            if rows or not await self._any_due():
                break
            rows = await self.pool.fetch(Q.claim_deliveries, limit, self.settings.lease_seconds)
        if not rows:
            return 0
        with tracing.continued("deliver", ((row["traceparent"], row["kind"]) for row in rows)):
            batch = await self._prepare(rows)
            if batch.emails:
                started = time.monotonic()
                results = await self.transport.send_batch(batch.emails, send_until)
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
        async with self._planned_now() as conn:
            reclaimed = await conn.fetch(Q.reclaim_expired_leases)
        if reclaimed:
            telemetry.LEASES_RECLAIMED.inc(len(reclaimed))
            log.warning("expired leases reclaimed", deliveries=len(reclaimed))
        await start_due_issues(self.db)
        await self.sweep_sequences()
        if time.monotonic() >= self._next_purge:
            # A scan of the subscribers: hourly is plenty for a limit counted in days.
            await purge_unconfirmed(self.db, self.settings.purge_unconfirmed_days)
            await trim_events(self.db, self.settings.event_retention_days)
            self._next_purge = time.monotonic() + 3600
        await self.pool.execute(Q.purge_rate_limits)
        await self.pool.execute(Q.purge_idempotency_keys)
        async with self._planned_now() as conn:
            stats = await conn.fetchrow(Q.queue_stats)
        telemetry.EVENTS_WRITTEN.set(await events_written(self.db))
        if stats is not None:
            telemetry.QUEUE_DEPTH.set(stats["depth"])
            telemetry.QUEUE_OLDEST_AGE.set(stats["oldest_age"])

    async def sweep_sequences(self) -> int:
        """Queue the sequence steps that are due, and wake the lanes to send each batch as it commits."""

        def queued(steps: int) -> None:
            telemetry.SEQUENCE_STEPS_QUEUED.inc(steps)
            for waker in self._wakers:
                waker.set()

        swept = await sweep(
            self.db,
            self.settings.sequence_sweep_batch,
            connections=self.settings.sequence_sweep_connections,
            on_queued=queued,
        )
        if swept.queued:
            log.info("sequence steps queued", steps=swept.queued)
        return swept.queued

    @contextlib.asynccontextmanager
    async def _planned_now(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection whose statements are planned for the tables as they are now. A statement prepared
        while `deliveries` was empty keeps a plan that reads the whole table until the next ANALYZE, which
        comes a minute or so after a fan-out of a million rows; for these statements that look for a few
        rows once a second, planning each time costs less."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            yield conn

    async def _any_due(self) -> bool:
        async with self._planned_now() as conn:
            return bool(await conn.fetchval(Q.any_due))

    async def _keep_house(self) -> None:
        while not self._closing.is_set():
            try:
                await self.housekeeping()
            except DATABASE_ERRORS as error:
                log.warning("housekeeping skipped: database unavailable", error=str(error))
            except Exception:
                log.exception("housekeeping failed")
            await sleep_unless(self._closing, min(1.0, self.settings.lease_seconds / 4))

    async def _reserve_rate(self, wanted: int) -> int:
        """With a sending rate configured, wait for this batch's slots before claiming (never while holding
        leases), and claim no more than the rate allows."""
        rates = self._send_rates
        if not rates:
            return wanted
        if not await self._any_due():
            return 0
        count = max(1, min(wanted, int(min(rates.values()))))
        waits = [
            await self.pool.fetchval(Q.reserve_send_slots, key, count, rate) for key, rate in rates.items()
        ]
        if max(waits) > 0:
            await asyncio.sleep(max(waits))
        return count

    async def _prepare(self, rows: Sequence[asyncpg.Record]) -> Batch:
        """Settle what may no longer be sent, and compose the rest."""
        batch = Batch()
        confirmations: list[tuple[asyncpg.Record, Token]] = []
        copies: list[asyncpg.Record] = []
        steps = await self._load_steps(rows)
        for row in rows:
            batch.claimed[row["id"]] = row
            if row["suppressed"]:
                batch.outcomes.append(Outcome(row, DeliveryStatus.SUPPRESSED, "address is suppressed"))
            elif not row["still_wanted"]:
                # Confirmed by an earlier email, unsubscribed or erased since this one was queued.
                batch.outcomes.append(Outcome(row, DeliveryStatus.CANCELLED, "no longer subscribed"))
            elif row["issue_status"] == IssueStatus.CANCELLED:
                batch.outcomes.append(Outcome(row, DeliveryStatus.CANCELLED, "issue cancelled"))
            elif row["issue_status"] == IssueStatus.PAUSED:
                # Recorded as waiting: the record parks it with the issue's others until it resumes.
                batch.outcomes.append(Outcome(row, DeliveryStatus.QUEUED, "issue paused", tried=False))
            elif row["kind"] == DeliveryKind.CONFIRMATION:
                confirmations.append((row, Token.generate()))
            elif row["kind"] == DeliveryKind.SEQUENCE:
                if row["step_id"] in steps:
                    batch.emails.append(self.composer.copy(steps[row["step_id"]], _copy_of(row)))
                else:  # the step, or its whole sequence, was deleted since the email was queued
                    batch.outcomes.append(Outcome(row, DeliveryStatus.CANCELLED, "step deleted"))
            else:
                copies.append(row)
        if confirmations:
            # Tokens are made at send time so that only their hashes are ever stored.
            await self.db.execute(
                Q.insert_confirmation_tokens,
                [token.digest for _, token in confirmations],
                [row["subscriber_id"] for row, _ in confirmations],
                [row["list_id"] for row, _ in confirmations],
                self.settings.confirmation_ttl_hours,
            )
            batch.emails.extend(
                self.composer.confirmation(row["id"], row["recipient"], row["list_name"], token)
                for row, token in confirmations
            )
        if copies:
            await self._load_issues(copies)
            batch.emails.extend(
                self.composer.copy(self._issues[row["issue_id"]].template, _copy_of(row)) for row in copies
            )
        if self.composer.signs and batch.emails:
            # RSA signing in pure Python takes milliseconds a message: off the event loop.
            batch.emails = await asyncio.to_thread(self.composer.sign_all, batch.emails)
        return batch

    async def _load_issues(self, rows: Sequence[asyncpg.Record]) -> None:
        """Render each issue once per worker; test copies of a draft re-read it, since drafts change."""
        wanted = {
            row["issue_id"]
            for row in rows
            if row["kind"] == DeliveryKind.TEST or row["issue_id"] not in self._issues
        }
        if not wanted:
            return
        for issue in await self.db.fetch(Q.issue_contents, list(wanted)):
            cached = self._issues.get(issue["id"])
            if cached is None or cached.version != issue["updated_at"]:
                template = self.composer.issue(issue["subject"], issue["html"], issue["text_body"])
                self._issues[issue["id"]] = IssueTemplate(issue["updated_at"], template)

    async def _load_steps(self, rows: Sequence[asyncpg.Record]) -> dict[int, MessageTemplate]:
        """The templates of the steps these deliveries send, rendered once per version of each step (an
        edited step sends its new content from then on)."""
        wanted = {row["step_id"] for row in rows if row["kind"] == DeliveryKind.SEQUENCE}
        if not wanted:
            return {}
        found = {}
        for step in await self.db.fetch(Q.step_contents, list(wanted)):
            cached = self._steps.get(step["id"])
            if cached is None or cached.version != step["updated_at"]:
                template = self.composer.issue(step["subject"], step["html"], step["text_body"])
                cached = self._steps[step["id"]] = IssueTemplate(step["updated_at"], template)
            found[step["id"]] = cached.template
        return found

    def _settle(self, row: asyncpg.Record, result: SendResult) -> Outcome:
        if isinstance(result, Sent):
            return Outcome(row, DeliveryStatus.SENT, provider_id=result.provider_message_id)
        assert isinstance(result, Failed)
        if result is LEASE_EXPIRED:
            # Not tried (its batch ran out of time): no attempt limit or age can fail it for that.
            return Outcome(row, DeliveryStatus.QUEUED, result.error, tried=False)
        telemetry.TRANSPORT_ERRORS.labels(permanent=str(result.permanent).lower()).inc()
        delay = None
        if not result.permanent and row["age_seconds"] <= self.settings.retry_max_age_seconds:
            delay = self.retry.delay(row["attempts"], result.retry_after)
        if delay is None:
            return Outcome(row, DeliveryStatus.FAILED, result.error, suppress=result.recipient_rejected)
        telemetry.DELIVERY_RETRIES.inc()
        return Outcome(row, DeliveryStatus.QUEUED, result.error, delay=delay)

    async def _record(self, outcomes: list[Outcome]) -> None:
        """Write the outcomes, retrying while the database is away: an unrecorded send would be sent again."""
        deadline = time.monotonic() + self.settings.lease_seconds
        rejected = [o for o in outcomes if o.suppress]
        while True:
            try:
                async with self.pool.acquire() as conn:
                    if rejected:  # the refused addresses are suppressed in the same transaction
                        async with conn.transaction():
                            await self._write_outcomes(conn, outcomes, rejected)
                    else:  # one statement commits by itself
                        await self._write_outcomes(conn, outcomes, rejected)
                break
            except DATABASE_ERRORS as error:
                if time.monotonic() > deadline:
                    raise
                log.warning("cannot record outcomes yet, retrying", error=str(error))
                await asyncio.sleep(0.5)
        self._log_batch(outcomes)

    @staticmethod
    async def _write_outcomes(
        conn: asyncpg.Connection, outcomes: list[Outcome], rejected: list[Outcome]
    ) -> None:
        settled = await conn.fetchval(
            Q.record_outcomes,
            [o.claimed["id"] for o in outcomes],
            [o.claimed["attempts"] for o in outcomes],
            [o.status for o in outcomes],
            [o.error for o in outcomes],
            [o.provider_id for o in outcomes],
            [o.delay for o in outcomes],
            [o.tried for o in outcomes],
        )
        if settled < len(outcomes):
            # Their leases expired and were reclaimed (the ledger marks them) before these outcomes could be
            # written: the newer attempt decides, and an email sent here may go out once more.
            log.warning(
                "outcomes recorded too late, after the lease was reclaimed",
                deliveries=len(outcomes) - settled,
            )
        if rejected:
            await conn.execute(
                Q.suppress_addresses,
                [o.claimed["recipient"] for o in rejected],
                [o.error or "" for o in rejected],
                SuppressionReason.HARD_BOUNCE,
            )

    def _log_batch(self, outcomes: list[Outcome]) -> None:
        counts = Counter(outcome.status for outcome in outcomes)
        issues = sorted({o.claimed["issue_id"] for o in outcomes if o.claimed["issue_id"] is not None})
        by_kind = Counter((outcome.claimed["kind"], outcome.status) for outcome in outcomes)
        for (kind, status), count in by_kind.items():
            telemetry.DELIVERIES.labels(kind=kind, status=status).inc(count)
        for outcome in outcomes:
            if outcome.claimed["kind"] != DeliveryKind.NEWSLETTER:
                # Transactional emails are few: one line each, carrying the id of the request that caused it.
                log.info(
                    "email settled",
                    delivery_id=outcome.claimed["id"],
                    kind=outcome.claimed["kind"],
                    status=outcome.status,
                    error=outcome.error,
                    request_id=outcome.claimed["request_id"],
                )
        log.info(
            "delivery batch",
            deliveries=len(outcomes),
            issues=issues,
            **{str(status): count for status, count in counts.items()},
        )

    async def _listen(self) -> None:
        """Wake the lanes on NOTIFY."""

        def wake() -> None:
            for waker in self._wakers:
                waker.set()

        await listen(self.pool, CHANNEL, wake, self._closing)


def _copy_of(row: asyncpg.Record) -> Copy:
    return Copy(
        delivery_id=row["id"],
        attempt=row["attempts"],
        recipient=row["recipient"],
        subscriber_id=row["subscriber_id"],
        list_id=row["list_id"],
        list_slug=row["list_slug"],
        list_name=row["list_name"],
    )


async def _wait_any(first: asyncio.Event, second: asyncio.Event, *, seconds: float) -> None:
    waiters = [asyncio.create_task(first.wait()), asyncio.create_task(second.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
