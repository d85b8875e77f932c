"""Reading what comes back: VERP return paths, bounce reports (RFC 3464) and provider payloads, whatever they
hold."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.domain.verp import parse_verp, verp_address
from newsletter.inbound.dsn import parse_dsn
from newsletter.inbound.providers import Rejected
from newsletter.inbound.providers.postmark import authorized, postmark_events
from newsletter.inbound.providers.sendgrid import sendgrid_events
from newsletter.inbound.providers.ses import ses_events
from newsletter.inbound.providers.sns import SnsMessage
from newsletter.services.compliance.reports import DeliveryEvent
from tests.bounce_reports import delivery_status_notification

KEY = b"the secret key"
delivery_ids = st.integers(min_value=1, max_value=10**18 - 1)
# The names the parsers look for, so that shapes close to real payloads come up as often as random ones.
FIELD_NAMES = [
    "Type", "Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Token", "SubscribeURL",
    "SignatureVersion", "Signature", "SigningCertURL", "notificationType", "eventType", "bounce", "complaint",
    "mail", "bounceType", "bouncedRecipients", "complainedRecipients", "complaintFeedbackType",
    "emailAddress", "feedbackId", "messageId", "source", "timestamp", "event", "type", "reason", "email",
    "sg_event_id", "RecordType", "ID", "Email", "BouncedAt", "Details",
]  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.sampled_from(
        ["Notification", "Bounce", "Complaint", "Permanent", "bounce", "blocked", "dropped", "spamreport",
         "HardBounce", "SpamComplaint", "1", "2", "a@example.com"]
    ),
    lambda children: st.lists(children)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=5), children),
    max_leaves=30,
)  # fmt: skip


@given(delivery_ids)
def test_a_verp_address_names_its_delivery_however_it_is_written(delivery_id: int) -> None:
    address = verp_address(delivery_id, "news.example.com", secret_key=KEY)

    assert len(address.partition("@")[0]) <= 64  # the longest local part SMTP allows
    assert parse_verp(address, secret_key=KEY) == delivery_id
    assert parse_verp(f"<{address}>", secret_key=KEY) == delivery_id
    assert parse_verp(f'"Bounces" <{address.upper()}>', secret_key=KEY) == delivery_id


@given(delivery_ids)
def test_a_verp_address_made_with_another_key_or_altered_names_nothing(delivery_id: int) -> None:
    forged = verp_address(delivery_id, "news.example.com", secret_key=b"another key")
    genuine = verp_address(delivery_id, "news.example.com", secret_key=KEY)
    altered = genuine.replace(f"+{delivery_id}-", f"+{delivery_id + 1}-")

    assert parse_verp(forged, secret_key=KEY) is None
    assert parse_verp(altered, secret_key=KEY) is None


@pytest.mark.parametrize(
    "address", ["", "newsletter@localhost", "bounces@localhost", "bounces+12-zz@localhost"]
)
def test_other_addresses_name_no_delivery(address: str) -> None:
    assert parse_verp(address, secret_key=KEY) is None


def test_a_permanent_failure_is_a_hard_bounce_of_the_delivery_its_return_path_names() -> None:
    to = verp_address(12, "localhost", secret_key=KEY)

    [event] = parse_dsn(delivery_status_notification("reader@example.com", to=to), secret_key=KEY)

    assert event == DeliveryEvent(
        provider="dsn",
        provider_event_id="<20261128100000.4E1C2A0@mx.example.net>:reader@example.com",
        kind="hard_bounce",
        email="reader@example.com",
        occurred_at=event.occurred_at,
        detail="5.1.1 smtp; 550 5.1.1 <reader@example.com>: Recipient address rejected: User unknown",
        delivery_id=12,
    )
    assert event.occurred_at.isoformat() == "2026-11-28T09:59:58+00:00"


@pytest.mark.parametrize(("action", "status"), [("delayed", "4.4.1"), ("failed", "4.4.7"), ("Delayed", "")])
def test_delays_and_temporary_failures_are_soft_bounces(action: str, status: str) -> None:
    report = delivery_status_notification("reader@example.com", action=action, status=status)

    [event] = parse_dsn(report, secret_key=KEY)

    assert event.kind == "soft_bounce"


@pytest.mark.parametrize("action", ["delivered", "relayed", "expanded"])
def test_reports_of_success_are_not_bounces(action: str) -> None:
    assert parse_dsn(delivery_status_notification("reader@example.com", action=action), secret_key=KEY) == []


def test_the_delivery_is_found_in_the_returned_headers_when_the_report_is_addressed_elsewhere() -> None:
    return_path = verp_address(7, "localhost", secret_key=KEY)
    report = delivery_status_notification(
        "reader@example.com", return_path=return_path, to="postmaster@localhost"
    )

    [event] = parse_dsn(report, secret_key=KEY)

    assert event.delivery_id == 7


def test_a_report_without_a_message_id_still_has_the_same_id_each_time_it_is_read() -> None:
    report = delivery_status_notification("reader@example.com").replace(
        b"Message-Id: <20261128100000.4E1C2A0@mx.example.net>\r\n", b""
    )

    [first] = parse_dsn(report, secret_key=KEY)
    [second] = parse_dsn(report, secret_key=KEY)

    assert first.provider_event_id == second.provider_event_id
    assert first.provider_event_id.startswith("sha256:")


def test_an_internationalized_report_is_read_too() -> None:
    report = delivery_status_notification("reader@example.com").replace(
        b"Content-Type: message/delivery-status", b"Content-Type: message/global-delivery-status"
    )

    [event] = parse_dsn(report, secret_key=KEY)

    assert (event.kind, event.email) == ("hard_bounce", "reader@example.com")


def test_messages_that_are_not_delivery_reports_hold_no_events() -> None:
    auto_reply = (
        b"From: reader@example.com\r\nTo: bounces+1-0000000000000000@localhost\r\nSubject: Out of office\r\n"
        b"Content-Type: text/plain\r\n\r\nI am away until Monday.\r\n"
    )

    assert parse_dsn(auto_reply, secret_key=KEY) == []


def _storable(event: DeliveryEvent) -> bool:
    fields = (event.provider_event_id, event.email, event.detail)
    return all("\x00" not in value and value.encode("utf-8") for value in fields)


@settings(max_examples=500)
@given(st.binary(max_size=4000))
def test_parsing_any_bytes_never_fails(raw: bytes) -> None:
    assert all(_storable(event) for event in parse_dsn(raw, secret_key=KEY))


header_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)


@settings(max_examples=300)
@given(header_text, header_text, header_text, header_text, header_text, st.binary(max_size=200))
def test_parsing_a_report_with_any_field_values_never_fails(
    recipient: str, action: str, status: str, diagnostic: str, message_id: str, junk: bytes
) -> None:
    report = delivery_status_notification(
        recipient.replace("{", "").replace("}", ""),
        action=action,
        status=status,
        diagnostic=diagnostic.replace("{", "").replace("}", ""),
        message_id=message_id,
    )

    for raw in (report, report.replace(b"Action:", junk + b"Action:"), report[: len(report) // 2]):
        assert all(_storable(event) for event in parse_dsn(raw, secret_key=KEY))


@settings(max_examples=500)
@given(json_values)
def test_provider_payloads_of_any_shape_are_read_or_rejected_never_failing(payload: Any) -> None:
    for read in (sendgrid_events, postmark_events, SnsMessage.parse):
        try:
            read(payload)
        except Rejected as error:
            assert error.status == 400
    assert all(_storable(event) for event in ses_events(json.dumps(payload), KEY))


@given(st.text(alphabet=string.printable, max_size=60))
def test_any_authorization_header_is_refused_but_the_right_one(header: str) -> None:
    assert not authorized(header, "user", "password")
    assert authorized("Basic dXNlcjpwYXNzd29yZA==", "user", "password")
    assert not authorized("Basic dXNlcjpwYXNzd29yZA==", None, None)
