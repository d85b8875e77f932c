"""Bounces and complaints reported after sending: each recorded once, however often it is delivered to us."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from newsletter.config import Settings
from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.vocabulary import Reporter, ReportKind

log = structlog.get_logger(__name__)


MAX_ADDRESS_LENGTH = 320
MAX_DETAIL_LENGTH = 1000
MAX_EVENT_ID_LENGTH = 500


def clean_text(value: str) -> str:
    """Text PostgreSQL accepts whatever a reporter sent: no NUL, no lone surrogates (undecodable bytes)."""
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


@dataclass(frozen=True, slots=True)
class DeliveryEvent:
    provider: Reporter
    provider_event_id: str
    kind: ReportKind
    email: str
    occurred_at: datetime
    detail: str = ""
    delivery_id: int | None = None

    @classmethod
    def parse(
        cls,
        provider: Reporter,
        provider_event_id: str,
        kind: ReportKind,
        email: str,
        occurred_at: datetime | None,
        detail: str = "",
        delivery_id: int | None = None,
    ) -> DeliveryEvent | None:
        """An event from what a reporter sent, or None when it names no address or has no id."""
        address = clean_text(email).strip().strip("<>").strip()
        if (
            not 0 < len(address) <= MAX_ADDRESS_LENGTH
            or "@" not in address
            or any(char.isspace() for char in address)
        ):
            return None
        event_id = clean_text(provider_event_id).strip()
        if not event_id:
            return None
        if len(event_id) > MAX_EVENT_ID_LENGTH:
            # Still one id per event, and the same one every time the event comes again.
            event_id = "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()
        if occurred_at is None or occurred_at.tzinfo is None:
            occurred_at = datetime.now(UTC)
        return cls(
            provider,
            event_id,
            kind,
            address,
            occurred_at,
            clean_text(detail)[:MAX_DETAIL_LENGTH],
            delivery_id,
        )


@dataclass(frozen=True, slots=True)
class BounceRules:
    """How many soft bounces within how many days make an address undeliverable."""

    soft_bounce_limit: int = 3
    window_days: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> BounceRules:
        return cls(settings.soft_bounce_limit, settings.soft_bounce_window_days)


@dataclass(frozen=True, slots=True)
class Applied:
    received: int
    # Events seen for the first time; the others were repeats and changed nothing.
    recorded: int
    suppressed: int


async def recent_reports(db: Database, *, before: int | None, limit: int) -> list[dict[str, Any]]:
    """Bounces and complaints reported by providers and bounce mailboxes, newest first."""
    return [dict(row) for row in await db.fetch(Q.reports_recent, before, limit)]


async def apply_events(db: Database, events: Sequence[DeliveryEvent], rules: BounceRules) -> Applied:
    """Record a batch of events and apply those not seen before, in one transaction."""
    if not events:
        return Applied(0, 0, 0)
    async with db.transaction() as conn:
        recorded = await conn.fetch(
            Q.reports_record,
            [event.provider for event in events],
            [event.provider_event_id for event in events],
            [event.kind for event in events],
            [event.email for event in events],
            [event.delivery_id for event in events],
            [event.detail for event in events],
            [event.occurred_at for event in events],
        )
        if not recorded:
            return Applied(len(events), 0, 0)
        await conn.execute(Q.reports_lock_addresses, [row["email"] for row in recorded])
        outcome = await conn.fetchrow(
            Q.reports_apply, [row["id"] for row in recorded], rules.soft_bounce_limit, rules.window_days
        )
    applied = Applied(len(events), len(recorded), outcome["suppressed"])
    log.info(
        "delivery events applied",
        received=applied.received,
        recorded=applied.recorded,
        suppressed=applied.suppressed,
        unsubscribed=outcome["unsubscribed"],
        deliveries_marked=outcome["marked"],
    )
    return applied
