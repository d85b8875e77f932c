"""SendGrid's signed event webhook: ECDSA (P-256, SHA-256) signatures over the timestamp and the raw body."""

from __future__ import annotations

import base64
import binascii
import functools
import re
from datetime import UTC, datetime
from typing import Any

import structlog
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from newsletter.domain.vocabulary import Reporter, ReportKind
from newsletter.inbound.providers import Rejected, text
from newsletter.services.compliance.reports import DeliveryEvent

log = structlog.get_logger(__name__)

# A signed batch older (or newer) than this is refused, so that one captured on the way cannot be replayed.
MAX_CLOCK_SKEW_SECONDS = 300
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# Why SendGrid dropped a message without trying: only these say the address itself is bad or complained.
DROPPED_KINDS: dict[str, ReportKind] = {
    "Bounced Address": ReportKind.HARD_BOUNCE,
    "Invalid": ReportKind.HARD_BOUNCE,
    "Spam Reporting Address": ReportKind.COMPLAINT,
}
BOUNCE_KINDS: dict[str, ReportKind] = {"bounce": ReportKind.HARD_BOUNCE, "blocked": ReportKind.SOFT_BOUNCE}


def verify(
    public_key: str | None, signature: str | None, timestamp: str | None, body: bytes, *, now: float
) -> None:
    """Raises Rejected unless `body` is signed by the configured key within the replay window."""
    if not public_key:
        raise Rejected(403, "SendGrid events are not accepted: no verification key is configured.")
    if not signature or not timestamp:
        raise Rejected(401, "The request is not signed.")
    if not _TIMESTAMP.fullmatch(timestamp) or abs(now - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        raise Rejected(403, "The signature's timestamp is too old or in the future.")
    try:
        key = _verification_key(public_key)
    except ValueError as error:
        log.error("NEWSLETTER_SENDGRID_PUBLIC_KEY cannot be used", error=str(error))
        raise Rejected(403, "SendGrid events are not accepted: the verification key is unusable.") from None
    try:
        signed = timestamp.encode() + body
        key.verify(base64.b64decode(signature, validate=True), signed, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, InvalidSignature):
        raise Rejected(403, "The signature does not match the request.") from None


@functools.cache
def _verification_key(encoded: str) -> ec.EllipticCurvePublicKey:
    try:
        key = load_der_public_key(base64.b64decode(encoded.strip(), validate=True))
    except (binascii.Error, UnsupportedAlgorithm) as error:
        raise ValueError(f"not a base64 DER public key: {error}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not a P-256 (prime256v1) public key")
    return key


def sendgrid_events(batch: Any) -> list[DeliveryEvent]:
    """The bounces and complaints of a batch; other events (delivered, opened...) are skipped."""
    if not isinstance(batch, list):
        raise Rejected(400, "SendGrid posts a JSON array of events.")
    events = []
    for item in batch:
        if not isinstance(item, dict):
            continue
        kind = _kind(item)
        if kind is None:
            continue
        event = DeliveryEvent.parse(
            Reporter.SENDGRID,
            text(item, "sg_event_id"),
            kind,
            text(item, "email"),
            _unix_time(item.get("timestamp")),
            text(item, "reason") or text(item, "status"),
        )
        if event is not None:
            events.append(event)
    return events


def _kind(item: dict[str, Any]) -> ReportKind | None:
    event = text(item, "event")
    if event == "bounce":
        return BOUNCE_KINDS.get(text(item, "type"))
    if event == "dropped":
        return DROPPED_KINDS.get(text(item, "reason"))
    if event == "spamreport":
        return ReportKind.COMPLAINT
    return None


def _unix_time(value: Any) -> datetime | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None
