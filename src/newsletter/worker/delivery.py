"""The delivery worker: claims due deliveries, sends them outside any transaction, records the outcomes.

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
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import asyncpg
import structlog

from newsletter import telemetry, tracing
from newsletter.config import Settings
from newsletter.db.queries import query
from newsletter.domain.tokens import Token, UnsubscribeToken
from newsletter.services import emails
from newsletter.services.bounces import verp_address
from newsletter.services.issues import start_due_issues
from newsletter.services.privacy import purge_unconfirmed
from newsletter.services.wake import CHANNEL
from newsletter.transports.base import LEASE_EXPIRED, Failed, OutgoingEmail, SendResult, Sent, Transport
from newsletter.worker.retry import RetryPolicy

log = structlog.get_logger(__name__)

# PostgreSQL errors and lost connections both mean "the database is not answering right now".
# InternalClientError: asyncpg's protocol left in a wrong state by a connection broken in the middle of an
# operation (seen when PostgreSQL restarts while a LISTEN is being sent); the pool replaces that connection.
DATABASE_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
LIST_ID = emails.LIST_ID
SENDING_SHARE_OF_LEASE = 0.75
# A claim reads a window of ids behind an issue's cursor; a window holding none of the issue's deliveries
# (other emails queued during its fan-out) claims nothing but moves the cursor, and the next claim goes on.
EMPTY_WINDOWS_PER_CLAIM = 20
UNSUBSCRIBE_URL = emails.UNSUBSCRIBE_URL


@dataclass(slots=True)
class Outcome:
    claimed: asyncpg.Record
    status: str
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
    template: emails.MessageTemplate


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
        self._domain = self._sender.domain or "localhost"
        self._issues: dict[int, IssueTemplate] = {}
        self._secret_key = settings.resolved_secret_key().encode()
        key = settings.dkim_key()
        self._dkim = (
            emails.DkimSigner(settings.dkim_selector, settings.dkim_domain or self._domain, key)
            if settings.dkim_selector and key
            else None
        )
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
                await _sleep_unless(stopping, 1.0)
                continue
            except Exception:
                log.exception("delivery lane failed; its leases will be reclaimed")
                await _sleep_unless(stopping, 1.0)
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
        rows = await self.pool.fetch(query("claim_deliveries"), limit, self.settings.lease_seconds)
        for _ in range(EMPTY_WINDOWS_PER_CLAIM):
            if rows or not await self._any_due():
                break
            rows = await self.pool.fetch(query("claim_deliveries"), limit, self.settings.lease_seconds)
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
            reclaimed = await conn.fetch(query("reclaim_expired_leases"))
        if reclaimed:
            telemetry.LEASES_RECLAIMED.inc(len(reclaimed))
            log.warning("expired leases reclaimed", deliveries=len(reclaimed))
        await start_due_issues(self.pool)
        if time.monotonic() >= self._next_purge:
            # A scan of the subscribers: hourly is plenty for a limit counted in days.
            await purge_unconfirmed(self.pool, self.settings.purge_unconfirmed_days)
            self._next_purge = time.monotonic() + 3600
        await self.pool.execute(query("purge_rate_limits"))
        await self.pool.execute(query("purge_idempotency_keys"))
        async with self._planned_now() as conn:
            stats = await conn.fetchrow(query("queue_stats"))
        if stats is not None:
            telemetry.QUEUE_DEPTH.set(stats["depth"])
            telemetry.QUEUE_OLDEST_AGE.set(stats["oldest_age"])

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
            return bool(await conn.fetchval(query("any_due")))

    async def _keep_house(self) -> None:
        while not self._closing.is_set():
            try:
                await self.housekeeping()
            except DATABASE_ERRORS as error:
                log.warning("housekeeping skipped: database unavailable", error=str(error))
            except Exception:
                log.exception("housekeeping failed")
            await _sleep_unless(self._closing, min(1.0, self.settings.lease_seconds / 4))

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
            await self.pool.fetchval(query("reserve_send_slots"), key, count, rate)
            for key, rate in rates.items()
        ]
        if max(waits) > 0:
            await asyncio.sleep(max(waits))
        return count

    async def _prepare(self, rows: Sequence[asyncpg.Record]) -> Batch:
        batch = Batch()
        confirmations: list[tuple[asyncpg.Record, Token]] = []
        newsletters: list[asyncpg.Record] = []
        for row in rows:
            batch.claimed[row["id"]] = row
            if row["suppressed"]:
                batch.outcomes.append(Outcome(row, "suppressed", "address is suppressed"))
            elif not row["still_wanted"]:
                # Confirmed by an earlier email, unsubscribed or erased since this one was queued.
                batch.outcomes.append(Outcome(row, "cancelled", "no longer subscribed"))
            elif row["issue_status"] == "cancelled":
                batch.outcomes.append(Outcome(row, "cancelled", "issue cancelled"))
            elif row["issue_status"] == "paused":
                # Recorded as waiting: the record parks it with the issue's others until it resumes.
                batch.outcomes.append(Outcome(row, "queued", "issue paused", tried=False))
            elif row["kind"] == "confirmation":
                confirmations.append((row, Token.generate()))
            else:
                newsletters.append(row)
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
        if newsletters:
            await self._load_issues(newsletters)
            batch.emails.extend(self._newsletter_email(row) for row in newsletters)
        if self._dkim is not None and batch.emails:
            # RSA signing in pure Python takes milliseconds a message: off the event loop.
            batch.emails = await asyncio.to_thread(self._sign_all, batch.emails)
        return batch

    def _sign_all(self, unsigned: list[OutgoingEmail]) -> list[OutgoingEmail]:
        assert self._dkim is not None
        return [replace(email, message=self._dkim.sign(email.message)) for email in unsigned]

    def _confirmation_email(self, row: asyncpg.Record, token: Token) -> OutgoingEmail:
        link = f"{self.settings.base_url}/subscriptions/confirm?{urlencode({'token': token.value})}"
        rendered = emails.render(
            "confirmation",
            list_name=row["list_name"] or "our newsletter",
            link=link,
            valid_for=emails.duration(self.settings.confirmation_ttl_hours * 3600),
        )
        message = emails.to_mime(rendered, sender=self._sender, recipient=row["recipient"])
        return OutgoingEmail(row["id"], self._return_path(row["id"]), row["recipient"], message)

    async def _load_issues(self, rows: Sequence[asyncpg.Record]) -> None:
        """Render each issue once per worker; test copies of a draft re-read it, since drafts change."""
        wanted = {
            row["issue_id"] for row in rows if row["kind"] == "test" or row["issue_id"] not in self._issues
        }
        if not wanted:
            return
        for issue in await self.pool.fetch(query("issue_contents"), list(wanted)):
            cached = self._issues.get(issue["id"])
            if cached is None or cached.version != issue["updated_at"]:
                self._issues[issue["id"]] = IssueTemplate(issue["updated_at"], self._render_issue(issue))

    def _render_issue(self, issue: asyncpg.Record) -> emails.MessageTemplate:
        return emails.newsletter_template(
            issue["subject"], issue["html"], issue["text_body"], sender=self._sender
        )

    def _newsletter_email(self, row: asyncpg.Record) -> OutgoingEmail:
        template = self._issues[row["issue_id"]].template
        if row["list_slug"]:
            list_id = emails.list_id(row["list_name"], f"{row['list_slug']}.{self._domain}")
            token = UnsubscribeToken(row["subscriber_id"], row["list_id"]).sign(self._secret_key)
        else:  # a test copy: nobody to unsubscribe
            list_id, token = f"Test <test.{self._domain}>", "test-copy"
        message = template.fill(
            recipient=row["recipient"],
            message_id=emails.message_id(self._domain, f"{row['id']}.{row['attempts']}"),
            values={LIST_ID: list_id, UNSUBSCRIBE_URL: f"{self.settings.base_url}/unsubscribe/{token}"},
        )
        return OutgoingEmail(row["id"], self._return_path(row["id"]), row["recipient"], message)

    def _return_path(self, delivery_id: int) -> str:
        if not self.settings.verp_return_path:
            return self._envelope_from
        return verp_address(delivery_id, self._domain, secret_key=self._secret_key)

    def _settle(self, row: asyncpg.Record, result: SendResult) -> Outcome:
        if isinstance(result, Sent):
            return Outcome(row, "sent", provider_id=result.provider_message_id)
        assert isinstance(result, Failed)
        if result is LEASE_EXPIRED:
            # Not tried (its batch ran out of time): no attempt limit or age can fail it for that.
            return Outcome(row, "queued", result.error, tried=False)
        telemetry.TRANSPORT_ERRORS.labels(permanent=str(result.permanent).lower()).inc()
        delay = None
        if not result.permanent and row["age_seconds"] <= self.settings.retry_max_age_seconds:
            delay = self.retry.delay(row["attempts"], result.retry_after)
        if delay is None:
            return Outcome(row, "failed", result.error, suppress=result.recipient_rejected)
        telemetry.DELIVERY_RETRIES.inc()
        return Outcome(row, "queued", result.error, delay=delay)

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
            query("record_outcomes"),
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
                query("suppress_addresses"),
                [o.claimed["recipient"] for o in rejected],
                [o.error or "" for o in rejected],
                "hard_bounce",
            )

    def _log_batch(self, outcomes: list[Outcome]) -> None:
        counts = Counter(outcome.status for outcome in outcomes)
        issues = sorted({o.claimed["issue_id"] for o in outcomes if o.claimed["issue_id"] is not None})
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
        log.info("delivery batch", deliveries=len(outcomes), issues=issues, **counts)

    async def _listen(self) -> None:
        """Wake the lanes on NOTIFY; reconnect if the connection drops (polling covers the gap)."""

        def wake(*_: Any) -> None:
            for waker in self._wakers:
                waker.set()

        while not self._closing.is_set():
            try:
                conn = await self.pool.acquire()
            except DATABASE_ERRORS:
                await _sleep_unless(self._closing, 1.0)
                continue
            try:
                await conn.add_listener(CHANNEL, wake)
                while not self._closing.is_set() and not conn.is_closed():
                    await _sleep_unless(self._closing, 1.0)
            except DATABASE_ERRORS:
                pass
            finally:
                with contextlib.suppress(*DATABASE_ERRORS):
                    if not conn.is_closed():
                        await conn.remove_listener(CHANNEL, wake)
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
