"""Subscribing and confirming: what happens, independent of HTTP."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import structlog

from newsletter import telemetry
from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.db.wake import Waker
from newsletter.domain.subscriber import InvalidInput, ListSlug, SubscriberEmail, SubscriberName
from newsletter.domain.tokens import Token
from newsletter.services.access import ratelimit
from newsletter.tracing import current_traceparent

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    email: SubscriberEmail
    name: SubscriberName
    list_slug: ListSlug


@dataclass(frozen=True, slots=True)
class Evidence:
    """Who asked, from where: kept as consent evidence."""

    ip: str | None
    user_agent: str | None
    source: str = "form"


@dataclass(frozen=True, slots=True)
class SignupLimits:
    per_ip: int
    ip_window_seconds: int
    per_address: int
    address_window_seconds: int


class UnknownList(InvalidInput):
    pass


@dataclass(frozen=True, slots=True)
class SignupList:
    """A list open to public sign-up, as its form shows it."""

    slug: str
    name: str
    description: str


async def public_list(db: Database, raw_slug: str) -> SignupList | None:
    """The list of a sign-up form; None for an unknown list and for one closed to public sign-up alike."""
    try:
        slug = ListSlug.parse(raw_slug)
    except InvalidInput:
        return None
    row = await db.fetchrow(Q.public_list, slug.value)
    return SignupList(row["slug"], row["name"], row["description"]) if row else None


def mailbox(email: SubscriberEmail) -> str:
    """The mailbox an address reaches, for the per-address sign-up limit: `ana+1@x` and `ana+2@x` are one
    mailbox, so forty tags do not make forty confirmation emails to one person. (The subscriber is still the
    address as given.) The erasure of rate limits in `subscribers_erase` computes the same key."""
    local, _, domain = email.value.rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}".lower()


async def subscribe(
    db: Database,
    request: SubscriptionRequest,
    evidence: Evidence,
    limits: SignupLimits,
    request_id: str | None,
    waker: Waker,
) -> None:
    """Record the wish to subscribe and queue a confirmation email when one is due.

    The caller learns nothing about whether the address was new, pending or confirmed: every outcome
    looks the same from outside, so the form cannot be used to find out who subscribes.
    """
    checks = [
        ratelimit.Limit(
            f"signup:mailbox:{mailbox(request.email)}", limits.per_address, limits.address_window_seconds
        ),
    ]
    if evidence.ip:
        checks.append(ratelimit.Limit(f"signup:ip:{evidence.ip}", limits.per_ip, limits.ip_window_seconds))
    async with db.connection() as conn:
        # Counted in a statement of its own: the counters are unlogged, so this commits without waiting for
        # the disk and the per-IP row is locked only for that instant, not for the whole sign-up's commit.
        # Both statements on one connection: one wait for the pool, not two, when every connection is busy.
        await ratelimit.hit(conn, checks)
        row = await conn.fetchrow(
            Q.subscribe,
            request.email.value,
            request.name.value,
            request.list_slug.value,
            evidence.source,
            evidence.ip,
            _clip(evidence.user_agent),
            request_id,
            current_traceparent(),
        )
    assert row is not None
    if not row["list_found"]:
        raise UnknownList("Unknown list.")
    if row["signed_up"]:
        telemetry.SIGNUPS.labels(request.list_slug.value).inc()
    if row["confirmed_at_once"]:
        telemetry.CONFIRMATIONS.labels(request.list_slug.value).inc()
    if row["emails_queued"]:
        waker.wake()
    log.debug("subscription requested", list=request.list_slug.value, emails_queued=row["emails_queued"])


class Confirmation(enum.Enum):
    CONFIRMED = "confirmed"
    ALREADY_CONFIRMED = "already_confirmed"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ConfirmationResult:
    outcome: Confirmation
    list_name: str | None = None


async def inspect_token(db: Database, raw_token: str) -> ConfirmationResult:
    """What pressing Confirm would do, without doing it (link scanners fetch every GET)."""
    token = Token.parse(raw_token)
    if token is None:
        return ConfirmationResult(Confirmation.UNKNOWN)
    row = await db.fetchrow(Q.token_state, token.digest)
    if row is None:
        return ConfirmationResult(Confirmation.UNKNOWN)
    if row["used"]:
        return ConfirmationResult(Confirmation.ALREADY_CONFIRMED, row["list_name"])
    # A link made before the person left is worth nothing since: it reads as expired.
    if row["expired"] or row["left_since"]:
        return ConfirmationResult(Confirmation.EXPIRED, row["list_name"])
    return ConfirmationResult(Confirmation.CONFIRMED, row["list_name"])


async def confirm(db: Database, raw_token: str, evidence: Evidence) -> ConfirmationResult:
    token = Token.parse(raw_token)
    if token is None:
        return ConfirmationResult(Confirmation.UNKNOWN)
    row = await db.fetchrow(Q.confirm, token.digest, evidence.ip, _clip(evidence.user_agent))
    if row is None:
        return ConfirmationResult(Confirmation.UNKNOWN)
    if row["confirmed_now"]:
        telemetry.CONFIRMATIONS.labels(row["list_slug"]).inc()
    if row["used_now"]:
        log.info("subscription confirmed")
        return ConfirmationResult(Confirmation.CONFIRMED, row["list_name"])
    if (row["expired"] or row["left_since"]) and not row["used_before"]:
        return ConfirmationResult(Confirmation.EXPIRED, row["list_name"])
    # Used before (the person may have left since: a used link brings nothing back), or by a concurrent
    # request a moment ago: repeating is harmless.
    return ConfirmationResult(Confirmation.ALREADY_CONFIRMED, row["list_name"])


async def resend_confirmation(
    db: Database, raw_token: str, limits: SignupLimits, evidence: Evidence, request_id: str | None
) -> bool:
    """Queue a new confirmation email for the pending subscription behind an expired token."""
    token = Token.parse(raw_token)
    if token is None:
        return False
    checks = [
        ratelimit.Limit(
            f"resend:token:{token.digest.hex()}", limits.per_address, limits.address_window_seconds
        )
    ]
    if evidence.ip:
        checks.append(ratelimit.Limit(f"signup:ip:{evidence.ip}", limits.per_ip, limits.ip_window_seconds))
    await ratelimit.hit(db, checks)
    row = await db.fetchrow(Q.resend_confirmation, token.digest, request_id, current_traceparent())
    assert row is not None
    return bool(row["emails_queued"])


def _clip(user_agent: str | None) -> str | None:
    return user_agent[:512] if user_agent else None
