"""Bounce messages read back: delivery status notifications (RFC 3464), each naming its delivery by the VERP
address it was sent to (domain/verp.py)."""

from __future__ import annotations

import asyncio
import email
import email.utils
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.parser import HeaderParser

from newsletter.db.database import Database
from newsletter.domain.verp import parse_verp
from newsletter.domain.vocabulary import Reporter, ReportKind
from newsletter.inbound.mailboxes import Mailbox
from newsletter.services.compliance.reports import BounceRules, DeliveryEvent, apply_events

REPORT_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
RETURNED_HEADER_TYPES = frozenset({"text/rfc822-headers", "message/rfc822"})
# Where the VERP address shows: the report is addressed to it, and the returned headers may hold the original
# envelope sender.
VERP_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To")
RETURNED_VERP_HEADERS = ("Return-Path",)


def parse_dsn(raw: bytes, *, secret_key: bytes) -> list[DeliveryEvent]:
    """The failures a delivery status notification reports, one event per recipient; none for any other
    message. `failed` with a 4.x.x status (the server gave up on a temporary problem) and `delayed` are soft;
    every other `failed` is hard. Never raises, whatever the bytes."""
    message = email.message_from_bytes(raw)
    if message.get_content_type() != "multipart/report" or _report_type(message) != "delivery-status":
        return []
    status = next((part for part in message.walk() if part.get_content_type() in REPORT_TYPES), None)
    if status is None:
        return []
    blocks = _status_blocks(status)
    if len(blocks) < 2:
        return []
    per_message, recipients = blocks[0], blocks[1:]
    report_id = (
        " ".join(_header(message, "Message-ID").split()) or "sha256:" + hashlib.sha256(raw).hexdigest()
    )
    delivery_id = _delivery_id(message, secret_key)
    reported_at = _date(_header(per_message, "Arrival-Date")) or _date(_header(message, "Date"))
    events = []
    for block in recipients:
        kind = _kind(_header(block, "Action"), _header(block, "Status"))
        if kind is None:
            continue
        address = _address(_header(block, "Final-Recipient") or _header(block, "Original-Recipient"))
        detail = " ".join(f"{_header(block, 'Status')} {_header(block, 'Diagnostic-Code')}".split())
        event = DeliveryEvent.parse(
            Reporter.DSN,
            f"{report_id}:{address.lower()}",
            kind,
            address,
            _date(_header(block, "Last-Attempt-Date")) or reported_at,
            detail,
            delivery_id,
        )
        if event is not None:
            events.append(event)
    return events


def _report_type(message: Message) -> str:
    value = message.get_param("report-type", "")
    return email.utils.collapse_rfc2231_value(value).strip().lower()


def _status_blocks(part: Message) -> list[Message]:
    """The per-message block and the per-recipient blocks of a delivery-status part.

    The email package reads message/delivery-status as one message per block; any other message/* type
    (message/global-delivery-status, RFC 6533) as one message, with the blocks after the first as its body.
    """
    payload = part.get_payload()
    blocks: list[Message] = []
    for block in payload if isinstance(payload, list) else []:
        if isinstance(block, Message):
            blocks.append(block)
            rest = block.get_payload()
            if isinstance(rest, str):
                chunks = re.split(r"\r?\n[ \t]*\r?\n", rest.strip())
                blocks.extend(HeaderParser().parsestr(chunk) for chunk in chunks if chunk.strip())
    return blocks


def _delivery_id(message: Message, secret_key: bytes) -> int | None:
    candidates = [_header(message, name) for name in VERP_HEADERS]
    for part in message.walk():
        returned = _returned_headers(part)
        if returned is not None:
            candidates.extend(_header(returned, name) for name in RETURNED_VERP_HEADERS)
    for candidate in candidates:
        delivery_id = parse_verp(candidate, secret_key=secret_key)
        if delivery_id is not None:
            return delivery_id
    return None


def _returned_headers(part: Message) -> Message | None:
    if part.get_content_type() not in RETURNED_HEADER_TYPES:
        return None
    payload = part.get_payload()
    if isinstance(payload, list):  # message/rfc822: the returned message itself
        return payload[0] if payload and isinstance(payload[0], Message) else None
    if isinstance(payload, str):
        return HeaderParser().parsestr(payload)
    return None


def _kind(action: str, status: str) -> ReportKind | None:
    action = action.strip().lower()
    if action == "delayed":
        return ReportKind.SOFT_BOUNCE
    if action == "failed":
        return ReportKind.SOFT_BOUNCE if status.strip().startswith("4") else ReportKind.HARD_BOUNCE
    return None


def _address(field: str) -> str:
    """The address of a recipient field such as `rfc822; someone@example.com`."""
    return field.rpartition(";")[2].strip().strip("<>").strip()


def _header(message: Message, name: str) -> str:
    # Headers holding undecodable bytes come back as Header objects; str() replaces what cannot be read.
    value = message.get(name)
    return "" if value is None else str(value)


def _date(value: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BounceReport:
    messages: int
    events: int
    # Events seen for the first time; the others had been read before.
    recorded: int
    suppressed: int


async def read_bounces(
    db: Database,
    mailbox: Mailbox,
    keys: Sequence[str],
    *,
    secret_key: bytes,
    rules: BounceRules,
    progress: Callable[[int], None],
    batch_size: int = 100,
) -> BounceReport:
    """Apply the bounce reports among the messages `keys`, a batch at a time, then mark that batch done.

    A batch is marked only after its events are committed: a crash in between reads it again, and events
    already recorded change nothing the second time. Mailboxes block, so they are read off the event loop.
    """
    messages = events = recorded = suppressed = 0
    for start in range(0, len(keys), batch_size):
        batch = keys[start : start + batch_size]
        raws = await asyncio.to_thread(_read_all, mailbox, batch)
        found = [event for raw in raws.values() for event in parse_dsn(raw, secret_key=secret_key)]
        applied = await apply_events(db, found, rules)
        await asyncio.to_thread(mailbox.done, list(raws))
        messages += len(raws)
        events += applied.received
        recorded += applied.recorded
        suppressed += applied.suppressed
        progress(len(batch))
    return BounceReport(messages, events, recorded, suppressed)


def _read_all(mailbox: Mailbox, keys: Sequence[str]) -> dict[str, bytes]:
    """The messages still there (another client may have taken one since the mailbox was listed)."""
    found = {}
    for key in keys:
        raw = mailbox.read(key)
        if raw is not None:
            found[key] = raw
    return found
