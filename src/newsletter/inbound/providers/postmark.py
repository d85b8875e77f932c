"""Postmark's bounce and spam complaint webhooks, authenticated by the basic-auth credentials in their URL."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

from newsletter.domain.vocabulary import Reporter, ReportKind
from newsletter.inbound.providers import Rejected, iso_time, text
from newsletter.services.compliance.reports import DeliveryEvent

BOUNCE_KINDS: dict[str, ReportKind] = {
    "HardBounce": ReportKind.HARD_BOUNCE,
    "SoftBounce": ReportKind.SOFT_BOUNCE,
    "Transient": ReportKind.SOFT_BOUNCE,
}


def authorized(header: str | None, user: str | None, password: str | None) -> bool:
    """Whether an Authorization header carries the configured credentials; none configured admits nobody."""
    if not user or not password or not header:
        return False
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given_user, colon, given_password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except binascii.Error:
        return False
    # Both compared, always, on digests of equal length: neither the answer's timing nor an early exit tells
    # which part was wrong, or how long the secret is.
    user_matches = hmac.compare_digest(_digest(given_user), _digest(user.encode()))
    password_matches = hmac.compare_digest(_digest(given_password), _digest(password.encode()))
    return bool(colon) & user_matches & password_matches


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def postmark_events(record: Any) -> list[DeliveryEvent]:
    """The event of one webhook call; none for bounce types that say nothing about the address."""
    if not isinstance(record, dict):
        raise Rejected(400, "Postmark posts one JSON object.")
    record_type = text(record, "RecordType")
    kind: ReportKind | None
    if record_type == "SpamComplaint":
        kind = ReportKind.COMPLAINT
    elif record_type == "Bounce":
        kind = BOUNCE_KINDS.get(text(record, "Type"))
    else:
        kind = None
    record_id = record.get("ID")
    if kind is None or not isinstance(record_id, int | str) or isinstance(record_id, bool):
        return []
    event = DeliveryEvent.parse(
        Reporter.POSTMARK,
        str(record_id),
        kind,
        text(record, "Email"),
        iso_time(record.get("BouncedAt")),
        text(record, "Details") or text(record, "Description"),
    )
    return [event] if event is not None else []
