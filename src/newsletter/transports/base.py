"""What every transport promises, and the one place that tells transient failures from permanent ones."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    delivery_id: int
    envelope_from: str
    recipient: str
    message: bytes


@dataclass(frozen=True, slots=True)
class Sent:
    provider_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    error: str
    permanent: bool
    # The recipient's own server refused this address for good: the address is suppressed.
    recipient_rejected: bool = False
    retry_after: float | None = None


SendResult = Sent | Failed


class SMTPError(Exception):
    """A reply the server gave at one stage of a conversation: connect, mail, rcpt or data."""

    def __init__(self, stage: str, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.stage = stage
        self.code = code
        self.message = message


# The time the worker's lease allows for sending a batch ran out before this email was started: sent later, it
# could also be sent by the worker the delivery is given to once the lease expires.
LEASE_EXPIRED = Failed(error="not sent: its batch ran out of lease time", permanent=False)


class Transport(Protocol):
    async def send_batch(
        self, emails: Sequence[OutgoingEmail], deadline: float | None = None
    ) -> list[SendResult]:
        """Send each email; one result per email, in order. Never raises for a failed send. By `deadline`
        (a `time.monotonic()` value) every send has ended: one still running is cut short (a timeout), one not
        yet started is not sent (LEASE_EXPIRED)."""
        ...

    async def close(self) -> None: ...


# "Authentication required", "must issue STARTTLS first" and the like refuse our session, not the message.
SESSION_REFUSALS = frozenset({530, 534, 535, 538})


def expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def time_left(deadline: float | None, limit: float) -> float:
    """Seconds a send may take: its own time limit, or less when the deadline comes first."""
    return limit if deadline is None else max(0.0, min(limit, deadline - time.monotonic()))


def classify_smtp_error(error: BaseException) -> Failed:
    """SMTP replies 4xx and every network problem are transient; 5xx replies are permanent, and a 5xx
    refusal of the recipient means that address must not be mailed again. Trouble setting up the session
    (greeting, TLS, login) says nothing about the message: it is kept until the operator fixes it."""
    if isinstance(error, SMTPError):
        permanent = error.code >= 500 and error.stage != "connect" and error.code not in SESSION_REFUSALS
        return Failed(
            error=f"{error.code} {error.message}"[:1000],
            permanent=permanent,
            recipient_rejected=permanent and error.stage == "rcpt",
        )
    return Failed(error=f"{type(error).__name__}: {error}".strip(": ")[:1000], permanent=False)


def classify_http_status(status: int, detail: str, retry_after_header: str | None = None) -> Failed:
    """HTTP 429 and 5xx are transient (honouring Retry-After); any other 4xx is permanent."""
    transient = status == 429 or status >= 500
    return Failed(
        error=f"HTTP {status}: {detail}"[:1000],
        permanent=not transient,
        retry_after=parse_retry_after(retry_after_header) if transient else None,
    )


def classify_postmark_error_code(code: int, message: str) -> Failed:
    """A non-zero Postmark `ErrorCode`: 406 (inactive recipient) means Postmark suppresses the address. Codes
    about our own token or account, or Postmark itself, are transient and kept until fixed: 10 bad token,
    100 maintenance, 400/401 sender signature missing or unconfirmed, 405 not allowed to send (no credits),
    412 account pending, 413 account may not send, 429 rate limit. Every other code is permanent."""
    return Failed(
        error=f"Postmark {code}: {message}"[:1000],
        permanent=code not in {10, 100, 400, 401, 405, 412, 413, 429},
        recipient_rejected=code == 406,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After holds either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
