"""Reports from email providers (Amazon SES through SNS, SendGrid, Postmark): authenticated, then read into
delivery events. Nothing here knows HTTP; the webhooks router turns these errors into answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


class Rejected(Exception):
    """Not authentic, not ours, or unreadable: answered with a 4xx, and nothing is applied."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Unavailable(Exception):
    """Authenticity cannot be checked right now (a certificate cannot be fetched): the sender should retry."""


def text(record: dict[str, Any], key: str) -> str:
    """A string field of a JSON object; anything else reads as empty."""
    value = record.get(key)
    return value if isinstance(value, str) else ""


def iso_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
