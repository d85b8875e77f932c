"""The webhook dispatcher: claim -> sign -> POST -> record, beside the delivery lanes of a worker.

Deliveries are claimed as emails are (a lease, SKIP LOCKED, each claim an attempt), at most
`webhook_endpoint_concurrency` in flight per endpoint and `webhook_concurrency` in all. Each is a signed POST
(Standard Webhooks) with a timeout, no redirects followed, to an address checked again after resolution.
Outcomes are recorded a batch at a time; the database decides what waits, what has failed, and which endpoint
is down or turned off (Q.webhook_record).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from newsletter import telemetry
from newsletter.config import Settings
from newsletter.db.database import DATABASE_ERRORS, Database, is_unavailable
from newsletter.db.queries import Q
from newsletter.db.wake import listen, sleep_unless
from newsletter.domain.webhooks import Signer, WebhookUrl, message_id, payload, refused_address
from newsletter.services.integrations.webhooks import RefusedTarget, check_addresses
from newsletter.transports.base import parse_retry_after
from newsletter.worker.retry import RetryPolicy

log = structlog.get_logger(__name__)

CHANNEL = "newsletter_webhooks"
USER_AGENT = "newsletter-webhooks/1"
ERROR_EXCERPT_BYTES = 500
TRIM_BATCH = 50_000
# A lease outlives the request's timeout by this much: time to record the outcome.
LEASE_MARGIN_SECONDS = 30


@dataclass(slots=True)
class Attempt:
    row: asyncpg.Record
    delivered: bool
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    delay: float = 0.0
    # The endpoint is down: nothing more is sent to it until the delay is over.
    down: bool = False
    # This delivery has failed for good (no retry); `gone`: the endpoint too, which is turned off.
    final: bool = False
    gone: bool = False


class GuardedResolver(AbstractResolver):
    """Resolves as usual, then refuses names that stand for an address a webhook may not go to: the check
    made when the endpoint was saved, made again when connecting (a name can change what it points at)."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        check_addresses(host, (ipaddress.ip_address(result["host"]) for result in found))
        return found

    async def close(self) -> None:
        await self._resolver.close()


def retryable(error: BaseException) -> bool:
    """The database is away, or rolled the transaction back (a deadlock between two workers' records): the
    same statements can succeed later. Anything else would fail again."""
    if not isinstance(error, DATABASE_ERRORS):
        return False
    sqlstate = getattr(error, "sqlstate", None) or ""
    return is_unavailable(error) or sqlstate.startswith("40")


class Flight:
    """What a dispatcher holds: requests on the wire, and their outcomes until they are recorded."""

    def __init__(self, dispatcher: WebhookDispatcher) -> None:
        self._dispatcher = dispatcher
        self._requests: set[asyncio.Task[Attempt]] = set()
        self.outcomes: list[Attempt] = []
        self.arrived = asyncio.Event()

    @property
    def sending(self) -> int:
        """Deliveries claimed and not yet recorded: each takes a slot."""
        return len(self._requests) + len(self.outcomes)

    def start(self, row: asyncpg.Record) -> None:
        request = asyncio.create_task(self._dispatcher.attempt(row))
        self._requests.add(request)
        request.add_done_callback(self._landed)

    def _landed(self, request: asyncio.Task[Attempt]) -> None:
        self._requests.discard(request)
        if request.cancelled():
            return
        # attempt() turns every failure of the request into an outcome: anything else is a bug, logged; the
        # delivery's lease is reclaimed when it expires.
        if (error := request.exception()) is not None:
            log.error("webhook attempt failed unexpectedly", exc_info=error)
            return
        self.outcomes.append(request.result())
        self.arrived.set()

    def take(self) -> list[Attempt]:
        taken, self.outcomes = self.outcomes, []
        return taken

    async def landed(self) -> None:
        """Wait for every request on the wire to end."""
        if self._requests:
            await asyncio.wait(self._requests)


class WebhookDispatcher:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        # Time decides when to give up (webhook_give_up_hours), not a number of attempts.
        self.retry = RetryPolicy(
            settings.webhook_retry_base_seconds,
            settings.webhook_retry_max_seconds,
            max_attempts=2**31,
            floor_share=0.5,
        )
        self._signers: dict[str, Signer] = {}
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._lease = settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS
        self._next_trim = 0.0

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until `stopping` is set; requests in flight are finished and recorded first.

        One loop talks to the database while the requests go on: each turn records the outcomes that came in
        since the last turn and claims as many deliveries as there are free slots, in one statement. A slot
        is held until its outcome is recorded (the claim counts an endpoint's `sending` rows against its
        limit), so the sooner it is recorded, the sooner it is refilled: turns follow one another as long as
        outcomes come in, each taking all that arrived during the one before (batches grow with the
        database's latency), and one commit frees and refills the slots together. The limits stay the
        database's to enforce, for all workers: what is leased is what is on the wire or not yet recorded.
        """
        log.info("webhook dispatcher started", concurrency=self.settings.webhook_concurrency)
        listener = asyncio.create_task(self._listen(stopping))
        keeper = asyncio.create_task(self._keep_house(stopping))
        flight = Flight(self)
        try:
            while not stopping.is_set():
                try:
                    await self._turn(flight, stopping)
                except Exception as error:
                    if retryable(error):
                        # The outcomes stay, to be recorded at the next turn (a late record is harmless: it
                        # only settles a delivery still leased by the attempt that made it).
                        log.warning("webhooks: database unavailable, retrying", error=str(error))
                    else:
                        flight.take()
                        log.exception("webhook dispatch failed; its leases will be reclaimed")
                    await sleep_unless(stopping, 1.0)
            await flight.landed()
            await self._record(flight.take())
        finally:
            await asyncio.gather(listener, keeper)
            await self.close()
            log.info("webhook dispatcher stopped")

    async def _turn(self, flight: Flight, stopping: asyncio.Event) -> None:
        """Record what came in and claim what there is room for, then wait for news (none if outcomes came in
        meanwhile)."""
        self._wake.clear()
        flight.arrived.clear()
        outcomes = list(flight.outcomes)
        # The slots of the outcomes recorded now are free for this claim.
        room = self.settings.webhook_concurrency - flight.sending + len(outcomes)
        rows = await self._settle(outcomes, room)
        # Dropped only once recorded: if the transaction failed, they are recorded at the next turn.
        del flight.outcomes[: len(outcomes)]
        for row in rows:
            flight.start(row)
        # The next turn is for outcomes that came in meanwhile, or for news of work: a turn with neither would
        # claim nothing (the claim just took what there was room for).
        waiters = {
            asyncio.create_task(flight.arrived.wait()),
            asyncio.create_task(self._wake.wait()),
            asyncio.create_task(stopping.wait()),
        }
        try:
            await asyncio.wait(
                waiters, timeout=self.settings.poll_interval_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def drain(self) -> int:
        """Deliver everything due now; for tests and one-off runs."""
        total = 0
        attempts: list[Attempt] = []
        while rows := await self._settle(attempts, self.settings.webhook_concurrency):
            attempts = await asyncio.gather(*(self.attempt(row) for row in rows))
            total += len(rows)
        return total

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            resolver = None if self.settings.webhook_allow_private else GuardedResolver()
            connector = aiohttp.TCPConnector(
                limit=self.settings.webhook_concurrency, resolver=resolver, ttl_dns_cache=10
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout_seconds),
                headers={"User-Agent": USER_AGENT},
                trust_env=False,  # no proxy from the environment: the address checked is the one reached
            )
        return self._session

    def _signer(self, secret: str) -> Signer:
        signer = self._signers.get(secret)
        if signer is None:
            signer = self._signers[secret] = Signer(secret)
        return signer

    async def attempt(self, row: asyncpg.Record) -> Attempt:
        """One signed POST of one event to one endpoint, and what came of it."""
        started = time.monotonic()

        def ended(**outcome: Any) -> Attempt:
            return Attempt(row, duration_ms=int((time.monotonic() - started) * 1000), **outcome)

        if row["type"] is None:
            return ended(delivered=False, error="the event is no longer in the record (trimmed)", final=True)
        body = payload(row["event_id"], row["type"], row["created_at"], row["data"])
        headers = self._signer(row["secret"]).headers(message_id(row["event_id"]), datetime.now(UTC), body)
        headers["Content-Type"] = "application/json"
        try:
            self._check_literal(row["url"])
            async with self._session_now().post(
                row["url"], data=body, headers=headers, allow_redirects=False
            ) as response:
                excerpt = await response.content.read(ERROR_EXCERPT_BYTES)
                status = response.status
                retry_after = response.headers.get("Retry-After")
                location = response.headers.get("Location")
        except RefusedTarget as error:
            return self._failed(ended, row, f"refused: {error}", down=True)
        except aiohttp.ClientConnectorError as error:
            cause = error.os_error if isinstance(error.os_error, RefusedTarget) else error
            prefix = "refused" if isinstance(cause, RefusedTarget) else "cannot connect"
            return self._failed(ended, row, f"{prefix}: {cause}", down=True)
        except TimeoutError:
            return self._failed(
                ended, row, f"no answer within {self.settings.webhook_timeout_seconds:g} s", down=True
            )
        except (aiohttp.ClientError, OSError) as error:
            return self._failed(ended, row, f"{type(error).__name__}: {error}"[:1000], down=True)
        if 200 <= status < 300:
            return ended(delivered=True, status_code=status)
        detail = excerpt.decode("utf-8", "replace").replace("\x00", "").strip()
        error_text = f"HTTP {status}" + (f": {detail}" if detail else "")
        if 300 <= status < 400:
            error_text = f"HTTP {status}: redirects are not followed (Location: {location})"
        if status == 410:
            return ended(delivered=False, status_code=status, error=error_text[:1000], final=True, gone=True)
        # No answer worth having, a 5xx, a 429, a redirect: the endpoint is down or misconfigured, and waits.
        # Another 4xx is about this event: the others go on.
        down = not (400 <= status < 500) or status in (408, 429)
        waited = parse_retry_after(retry_after) if status in (429, 503) else None
        return self._failed(ended, row, error_text[:1000], down=down, status_code=status, retry_after=waited)

    def _failed(
        self,
        ended: Any,
        row: asyncpg.Record,
        error: str,
        *,
        down: bool,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> Attempt:
        ceiling = self.settings.webhook_give_up_hours * 3600
        delay = self.retry.delay(row["attempts"], min(retry_after, ceiling) if retry_after else None)
        assert delay is not None
        attempt: Attempt = ended(
            delivered=False, status_code=status_code, error=error, delay=delay, down=down
        )
        return attempt

    def _check_literal(self, raw: str) -> None:
        """An IP address in the URL is connected to without resolution: checked here instead."""
        if self.settings.webhook_allow_private:
            return
        address = WebhookUrl.parse(raw).literal_address
        if address is not None and (reason := refused_address(address)) is not None:
            raise RefusedTarget(reason)

    async def _settle(self, attempts: list[Attempt], room: int) -> list[asyncpg.Record]:
        """Record `attempts` and claim up to `room` due deliveries, in one statement (Q.webhook_settle): one
        round trip and one commit for both, and the slots that the recorded attempts held are free for the
        claim."""
        rows = await self.db.fetch(
            Q.webhook_settle,
            [a.row["id"] for a in attempts],
            [a.row["attempts"] for a in attempts],
            [a.delivered for a in attempts],
            [a.status_code for a in attempts],
            [a.error for a in attempts],
            [a.delay for a in attempts],
            [a.duration_ms for a in attempts],
            [a.down for a in attempts],
            self.settings.webhook_give_up_hours,
            self.settings.webhook_disable_after_hours,
            [a.final for a in attempts],
            [a.gone for a in attempts],
            room,
            self.settings.webhook_endpoint_concurrency,
            self._lease,
        )
        if attempts:
            self._count(attempts, rows[0])
        # Nothing claimed: the one row there is carries only what the record found.
        return [row for row in rows if row["id"] is not None]

    async def _record(self, attempts: list[Attempt]) -> None:
        """Write the last outcomes, retrying while the database is away: an unrecorded delivery is sent
        again."""
        deadline = time.monotonic() + LEASE_MARGIN_SECONDS
        while attempts:
            try:
                await self._settle(attempts, 0)
                return
            except DATABASE_ERRORS as error:
                if not is_unavailable(error) or time.monotonic() > deadline:
                    raise
                log.warning("cannot record webhook attempts yet, retrying", error=str(error))
                await asyncio.sleep(0.5)

    def _count(self, attempts: list[Attempt], recorded: asyncpg.Record) -> None:
        delivered = sum(a.delivered for a in attempts)
        failed = recorded["failed"]
        telemetry.WEBHOOK_ATTEMPTS.labels(outcome="delivered").inc(delivered)
        telemetry.WEBHOOK_ATTEMPTS.labels(outcome="failed").inc(failed)
        telemetry.WEBHOOK_ATTEMPTS.labels(outcome="retried").inc(len(attempts) - delivered - failed)
        for url in recorded["turned_off"]:
            log.warning("webhook endpoint turned off", url=url)
        failures = [a for a in attempts if not a.delivered]
        if failures:
            log.info(
                "webhook attempts failed",
                attempts=len(attempts),
                failed=len(failures),
                errors=sorted({a.error or "" for a in failures})[:5],
            )

    async def housekeeping(self) -> None:
        reclaimed = await self.db.fetch(Q.webhook_reclaim)
        if reclaimed:
            log.warning("expired webhook leases reclaimed", deliveries=len(reclaimed))
        given_up = await self.db.fetch(Q.webhook_give_up, self.settings.webhook_give_up_hours)
        if given_up:
            telemetry.WEBHOOK_ATTEMPTS.labels(outcome="failed").inc(len(given_up))
            log.warning("webhook deliveries given up", deliveries=len(given_up))
        if time.monotonic() >= self._next_trim:
            while await self.db.fetchval(Q.webhook_trim, self.settings.event_retention_days, TRIM_BATCH):
                pass
            self._next_trim = time.monotonic() + 3600
        backlog = await self.db.fetch(Q.webhook_backlog)
        telemetry.WEBHOOK_OLDEST_WAITING.clear()
        for endpoint in backlog:
            telemetry.WEBHOOK_OLDEST_WAITING.labels(endpoint=str(endpoint["id"])).set(
                endpoint["oldest_seconds"]
            )

    async def _keep_house(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.housekeeping()
            except DATABASE_ERRORS as error:
                log.warning("webhook housekeeping skipped: database unavailable", error=str(error))
            except Exception:
                log.exception("webhook housekeeping failed")
            await sleep_unless(stopping, 1.0)

    async def _listen(self, stopping: asyncio.Event) -> None:
        await listen(self.db.pool, CHANNEL, self._wake.set, stopping)
