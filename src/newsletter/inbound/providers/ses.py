"""Amazon SES bounce and complaint notifications (the `Message` of an SNS notification) as delivery events."""

from __future__ import annotations

import json
from typing import Any

from newsletter.domain.verp import parse_verp
from newsletter.domain.vocabulary import Reporter, ReportKind
from newsletter.inbound.providers import iso_time, text
from newsletter.services.compliance.reports import DeliveryEvent


def ses_events(message: str, secret_key: bytes) -> list[DeliveryEvent]:
    """The events of one notification; none for other notifications (deliveries, tests, anything else).

    Identity notifications name their kind `notificationType`, configuration-set events `eventType`; the
    content is the same. A bounce SES cannot classify ("Undetermined") counts as soft.
    """
    try:
        notification = json.loads(message)
    except ValueError:
        return []
    if not isinstance(notification, dict):
        return []
    kind = text(notification, "notificationType") or text(notification, "eventType")
    if kind == "Bounce":
        report = _object(notification.get("bounce"))
        permanent = text(report, "bounceType") == "Permanent"
        event_kind = ReportKind.HARD_BOUNCE if permanent else ReportKind.SOFT_BOUNCE
        recipients = report.get("bouncedRecipients")
        summary = f"{text(report, 'bounceType')}/{text(report, 'bounceSubType')}"
    elif kind == "Complaint":
        report = _object(notification.get("complaint"))
        # A recipient who moved the message out of the spam folder: the opposite of a complaint.
        if text(report, "complaintFeedbackType") == "not-spam":
            return []
        event_kind = ReportKind.COMPLAINT
        recipients = report.get("complainedRecipients")
        summary = text(report, "complaintFeedbackType") or "complaint"
    else:
        return []
    mail = _object(notification.get("mail"))
    report_id = text(report, "feedbackId") or text(mail, "messageId")
    if not report_id or not isinstance(recipients, list):
        return []
    # SES reports the envelope sender as `mail.source`: our VERP address names the delivery.
    delivery_id = parse_verp(text(mail, "source"), secret_key=secret_key)
    occurred_at = iso_time(report.get("timestamp"))
    events = []
    for recipient in recipients:
        entry = _object(recipient)
        address = text(entry, "emailAddress")
        detail = f"{summary}: {text(entry, 'diagnosticCode') or text(entry, 'status')}".rstrip(": ")
        event = DeliveryEvent.parse(
            Reporter.SES,
            f"{report_id}:{address.lower()}",
            event_kind,
            address,
            occurred_at,
            detail,
            delivery_id,
        )
        if event is not None:
            events.append(event)
    return events


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
