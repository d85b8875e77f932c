"""Provider webhooks: only authentic reports are applied, each once; bounces and complaints stop the mail.

The providers' side of the network is played by the tests: SNS messages are signed here with an RSA key and a
self-signed certificate served by a stand-in for Amazon's certificate host, SendGrid batches with a P-256 key.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from newsletter.domain.verp import verp_address
from newsletter.domain.vocabulary import SuppressionReason
from newsletter.inbound.providers.sns import FetchFailed
from tests.harness import AdminClient, SMTPServer, TestApp, add_confirmed, admin_client, spawn_app

pytestmark = pytest.mark.asyncio

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
SUBSCRIBE_URL = (
    "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=" + TOPIC + "&Token=2336412f37"
)
POSTMARK_AUTH = ("postmark", "correct horse battery staple")
# The fields AWS signs, in order, per type of message ("Verifying the signatures of Amazon SNS messages").
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
SUBSCRIPTION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


class AmazonSns:
    """Amazon's side of the network: serves certificates and subscription confirmations, records each GET."""

    def __init__(self, documents: dict[str, bytes]) -> None:
        self.documents = documents
        self.requests: list[str] = []

    async def get(self, url: str) -> bytes:
        self.requests.append(url)
        if url not in self.documents:
            raise FetchFailed(f"GET {url}: 404")
        return self.documents[url]


@pytest.fixture(scope="module")
def sns_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed_certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def sign_sns(message: dict[str, str], key: rsa.RSAPrivateKey, version: str = "1") -> dict[str, str]:
    fields = NOTIFICATION_FIELDS if message["Type"] == "Notification" else SUBSCRIPTION_FIELDS
    canonical = "".join(f"{name}\n{message[name]}\n" for name in fields if name in message)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(canonical.encode(), padding.PKCS1v15(), algorithm)
    return {**message, "SignatureVersion": version, "Signature": base64.b64encode(signature).decode()}


def notification(
    ses_message: dict[str, Any], *, topic: str = TOPIC, cert_url: str = CERT_URL
) -> dict[str, str]:
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": json.dumps(ses_message),
        "Timestamp": "2026-11-28T12:00:00.000Z",
        "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    }


def ses_bounce(
    address: str,
    bounce_type: str = "Permanent",
    *,
    feedback_id: str | None = None,
    source: str = "newsletter@localhost",
) -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": address,
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": "2026-11-28T11:59:58.000Z",
            "feedbackId": feedback_id or str(uuid.uuid4()),
        },
        "mail": {"timestamp": "2026-11-28T11:59:50.000Z", "source": source, "messageId": str(uuid.uuid4())},
    }


def ses_complaint(address: str, *, source: str = "newsletter@localhost") -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": address}],
            "complaintFeedbackType": "abuse",
            "timestamp": "2026-11-28T11:59:58.000Z",
            "feedbackId": str(uuid.uuid4()),
        },
        "mail": {"timestamp": "2026-11-28T11:59:50.000Z", "source": source, "messageId": str(uuid.uuid4())},
    }


@dataclass
class Webhooks:
    app: TestApp
    sns: AmazonSns
    sns_key: rsa.RSAPrivateKey
    sendgrid_key: ec.EllipticCurvePrivateKey

    async def ses(self, message: dict[str, str], *, version: str = "1") -> httpx.Response:
        signed = sign_sns(message, self.sns_key, version)
        return await self.app.client.post(
            "/webhooks/ses", content=json.dumps(signed), headers={"Content-Type": "text/plain; charset=UTF-8"}
        )

    async def sendgrid(
        self,
        events: list[dict[str, Any]],
        *,
        timestamp: int | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> httpx.Response:
        body = json.dumps(events).encode()
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = (key or self.sendgrid_key).sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        }
        return await self.app.client.post("/webhooks/sendgrid", content=body, headers=headers)

    async def postmark(
        self, record: dict[str, Any], auth: tuple[str, str] | None = POSTMARK_AUTH
    ) -> httpx.Response:
        return await self.app.client.post("/webhooks/postmark", json=record, auth=auth)

    async def suppression(self, address: str) -> str | None:
        reason: str | None = await self.app.pool.fetchval(
            "SELECT reason FROM suppressions WHERE lower(email) = lower($1)", address
        )
        return reason

    async def events(self) -> int:
        count: int = await self.app.pool.fetchval("SELECT count(*) FROM delivery_events")
        return count


@pytest.fixture
async def hooks(
    database_url: str, smtp: SMTPServer, sns_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Webhooks]:
    sendgrid_key = ec.generate_private_key(ec.SECP256R1())
    public_der = sendgrid_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    monkeypatch.setenv("NEWSLETTER_SES_TOPIC_ARNS", f"arn:aws:sns:us-east-1:123456789012:other, {TOPIC}")
    monkeypatch.setenv("NEWSLETTER_SENDGRID_PUBLIC_KEY", base64.b64encode(public_der).decode())
    monkeypatch.setenv("NEWSLETTER_POSTMARK_WEBHOOK_USER", POSTMARK_AUTH[0])
    monkeypatch.setenv("NEWSLETTER_POSTMARK_WEBHOOK_PASSWORD", POSTMARK_AUTH[1])
    sns = AmazonSns(
        {CERT_URL: self_signed_certificate(sns_key), SUBSCRIBE_URL: b"<ConfirmSubscriptionResponse/>"}
    )

    async with spawn_app(database_url, smtp, fetcher=sns) as app:
        yield Webhooks(app, sns, sns_key, sendgrid_key)


@pytest.fixture
async def admin(hooks: Webhooks) -> AdminClient:
    return await admin_client(hooks.app)


# Amazon SES through SNS


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_signed_ses_hard_bounce_suppresses_the_address_and_ends_its_subscriptions(
    hooks: Webhooks, version: str
) -> None:
    [reader] = await add_confirmed(hooks.app.pool, 1)

    response = await hooks.ses(notification(ses_bounce(reader)), version=version)

    assert response.status_code == 200, response.text
    assert response.json() == {"received": 1, "recorded": 1}
    assert await hooks.suppression(reader) == "hard_bounce"
    assert await hooks.app.subscription_status(reader) == "unsubscribed"


async def test_an_sns_message_with_a_bad_signature_is_rejected(hooks: Webhooks) -> None:
    [reader] = await add_confirmed(hooks.app.pool, 1)
    signed = sign_sns(notification(ses_bounce(reader)), hooks.sns_key)
    tampered = {**signed, "Message": json.dumps(ses_bounce("someone-else@example.com"))}

    response = await hooks.app.client.post("/webhooks/ses", content=json.dumps(tampered))

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert await hooks.events() == 0
    assert await hooks.suppression("someone-else@example.com") is None


async def test_an_sns_message_signed_by_another_key_is_rejected(hooks: Webhooks) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signed = sign_sns(notification(ses_bounce("reader@example.com")), stranger)

    response = await hooks.app.client.post("/webhooks/ses", content=json.dumps(signed))

    assert response.status_code == 403
    assert await hooks.events() == 0


@pytest.mark.parametrize(
    "cert_url",
    [
        "https://sns.eu-west-1.amazonaws.com.evil.com/cert.pem",
        "http://sns.eu-west-1.amazonaws.com/cert.pem",
        "https://evil.com/sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com@evil.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/cert.pem",
        "https://evilsns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com\\@evil.com/cert.pem",
        # On an SNS host, but not where SNS keeps its certificates, or with a query.
        "https://sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com/?Action=ListTopics",
        "https://sns.eu-west-1.amazonaws.com/a/SimpleNotificationService-0123456789abcdef.pem",
        CERT_URL + "?cachebuster=1",
    ],
)
async def test_a_certificate_anywhere_but_an_sns_host_is_never_fetched(
    hooks: Webhooks, cert_url: str
) -> None:
    # Served, and by the right key: only where it lives is wrong.
    hooks.sns.documents[cert_url] = hooks.sns.documents[CERT_URL]

    response = await hooks.ses(notification(ses_bounce("reader@example.com"), cert_url=cert_url))

    assert response.status_code == 403
    assert hooks.sns.requests == []
    assert await hooks.events() == 0


async def test_a_message_from_a_topic_not_configured_is_rejected_before_anything_is_fetched(
    hooks: Webhooks,
) -> None:
    message = notification(
        ses_bounce("reader@example.com"), topic="arn:aws:sns:eu-west-1:999999999999:theirs"
    )

    response = await hooks.ses(message)

    assert response.status_code == 403
    assert hooks.sns.requests == []
    assert await hooks.events() == 0


async def test_without_configured_topics_every_sns_message_is_rejected(
    hooks: Webhooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks.app.settings.ses_topic_arns = frozenset()

    response = await hooks.ses(notification(ses_bounce("reader@example.com")))

    assert response.status_code == 403
    assert await hooks.events() == 0


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"Type": "Notification"}', b"\xff\xfe"])
async def test_malformed_sns_messages_are_answered_400(hooks: Webhooks, body: bytes) -> None:
    response = await hooks.app.client.post("/webhooks/ses", content=body)

    assert response.status_code == 400


async def test_the_certificate_is_fetched_once_and_kept(hooks: Webhooks) -> None:
    for _ in range(3):
        assert (await hooks.ses(notification(ses_bounce("reader@example.com")))).status_code == 200

    assert hooks.sns.requests == [CERT_URL]


async def test_a_certificate_that_cannot_be_fetched_asks_sns_to_retry(hooks: Webhooks) -> None:
    missing = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-rotated.pem"

    response = await hooks.ses(notification(ses_bounce("reader@example.com"), cert_url=missing))

    assert response.status_code == 503
    assert await hooks.events() == 0


async def test_a_signed_subscription_confirmation_is_confirmed_by_visiting_its_subscribe_url(
    hooks: Webhooks,
) -> None:
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": "2336412f37",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": SUBSCRIBE_URL,
        "Timestamp": "2026-11-28T12:00:00.000Z",
        "SigningCertURL": CERT_URL,
    }

    response = await hooks.ses(confirmation, version="2")

    assert response.status_code == 200, response.text
    assert hooks.sns.requests == [CERT_URL, SUBSCRIBE_URL]


async def test_a_subscription_confirmation_pointing_elsewhere_is_not_followed(hooks: Webhooks) -> None:
    elsewhere = "https://sns.eu-west-1.amazonaws.com.evil.com/?Action=ConfirmSubscription"
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": "2336412f37",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": elsewhere,
        "Timestamp": "2026-11-28T12:00:00.000Z",
        "SigningCertURL": CERT_URL,
    }

    response = await hooks.ses(confirmation)

    assert response.status_code == 403
    assert elsewhere not in hooks.sns.requests


async def test_the_same_notification_delivered_again_counts_once(hooks: Webhooks) -> None:
    [reader] = await add_confirmed(hooks.app.pool, 1)
    soft = notification(ses_bounce(reader, "Transient", feedback_id="feedback-1"))

    answers = [await hooks.ses(soft) for _ in range(3)]

    assert [answer.json()["recorded"] for answer in answers] == [1, 0, 0]
    assert await hooks.events() == 1
    assert await hooks.suppression(reader) is None


async def test_a_bounce_through_our_return_path_marks_the_delivery_and_a_complaint_stops_the_next_issue(
    hooks: Webhooks, admin: AdminClient
) -> None:
    app = hooks.app
    await admin.post("/lists", {"slug": "weekly", "name": "Weekly"})
    bouncing, complaining, reading = await add_confirmed(app.pool, 3)
    await app.pool.execute(
        "INSERT INTO subscriptions (subscriber_id, list_id, status, confirmed_at) "
        "SELECT subscribers.id, lists.id, 'confirmed', now() FROM subscribers, lists "
        "WHERE subscribers.email = $1 AND lists.slug = 'weekly'",
        complaining,
    )
    first = (
        await admin.post("/issues", {"subject": "One", "markdown": "Hello", "lists": ["default"]})
    ).json()
    await admin.post(f"/issues/{first['id']}/send")
    await app.dispatch_all_pending()
    key = app.settings.resolved_secret_key().encode()
    [bounced_delivery] = await app.deliveries(bouncing)
    [complained_delivery] = await app.deliveries(complaining)

    bounce = ses_bounce(bouncing, source=verp_address(bounced_delivery["id"], "localhost", secret_key=key))
    complaint = ses_complaint(
        complaining, source=verp_address(complained_delivery["id"], "localhost", secret_key=key)
    )
    assert (await hooks.ses(notification(bounce))).status_code == 200
    assert (await hooks.ses(notification(complaint))).status_code == 200

    assert [row["status"] for row in await app.deliveries(bouncing)] == ["bounced"]
    assert [row["status"] for row in await app.deliveries(complaining)] == ["complained"]
    assert await hooks.suppression(complaining) == "complaint"
    assert await app.subscription_status(complaining, "default") == "unsubscribed"
    assert await app.subscription_status(complaining, "weekly") == "unsubscribed"
    assert await app.subscription_status(reading) == "confirmed"

    second = (
        await admin.post("/issues", {"subject": "Two", "markdown": "Again", "lists": ["default", "weekly"]})
    ).json()
    await admin.post(f"/issues/{second['id']}/send")
    await app.dispatch_all_pending()

    assert len(app.smtp.to(reading)) == 2
    assert len(app.smtp.to(bouncing)) == len(app.smtp.to(complaining)) == 1
    assert (await admin.get(f"/issues/{second['id']}")).json()["counts"]["total"] == 1


async def test_a_forged_return_path_names_no_delivery(hooks: Webhooks) -> None:
    [reader] = await add_confirmed(hooks.app.pool, 1)
    forged = verp_address(1, "localhost", secret_key=b"not the key")

    assert (await hooks.ses(notification(ses_bounce(reader, source=forged)))).status_code == 200

    assert await hooks.app.pool.fetchval("SELECT delivery_id FROM delivery_events") is None


async def test_a_not_spam_report_is_not_a_complaint(hooks: Webhooks) -> None:
    [reader] = await add_confirmed(hooks.app.pool, 1)
    report = ses_complaint(reader)
    report["complaint"]["complaintFeedbackType"] = "not-spam"

    assert (await hooks.ses(notification(report))).json() == {"received": 0, "recorded": 0}
    assert await hooks.suppression(reader) is None


# SendGrid


async def test_a_signed_sendgrid_batch_is_applied(hooks: Webhooks) -> None:
    hard, soft, complaint, delivered = await add_confirmed(hooks.app.pool, 4)
    now = int(time.time())
    batch = [
        {
            "email": hard,
            "event": "bounce",
            "type": "bounce",
            "reason": "550 5.1.1 unknown user",
            "sg_event_id": "sg-1",
            "timestamp": now,
        },
        {
            "email": soft,
            "event": "bounce",
            "type": "blocked",
            "reason": "421 try later",
            "sg_event_id": "sg-2",
            "timestamp": now,
        },
        {"email": complaint, "event": "spamreport", "sg_event_id": "sg-3", "timestamp": now},
        {"email": delivered, "event": "delivered", "sg_event_id": "sg-4", "timestamp": now},
    ]

    response = await hooks.sendgrid(batch)

    assert response.status_code == 200, response.text
    assert response.json() == {"received": 3, "recorded": 3}
    assert await hooks.suppression(hard) == "hard_bounce"
    assert await hooks.suppression(soft) is None
    assert await hooks.suppression(complaint) == "complaint"
    assert await hooks.suppression(delivered) is None
    assert await hooks.app.subscription_status(complaint) == "unsubscribed"


async def test_a_sendgrid_batch_signed_by_another_key_is_rejected(hooks: Webhooks) -> None:
    event = {"email": "reader@example.com", "event": "spamreport", "sg_event_id": "sg-1", "timestamp": 1}

    response = await hooks.sendgrid([event], key=ec.generate_private_key(ec.SECP256R1()))

    assert response.status_code == 403
    assert await hooks.events() == 0


@pytest.mark.parametrize("age_seconds", [400, 3600, -400])
async def test_a_sendgrid_batch_signed_too_long_ago_or_in_the_future_is_rejected(
    hooks: Webhooks, age_seconds: int
) -> None:
    event = {"email": "reader@example.com", "event": "spamreport", "sg_event_id": "sg-1", "timestamp": 1}

    response = await hooks.sendgrid([event], timestamp=int(time.time()) - age_seconds)

    assert response.status_code == 403
    assert await hooks.events() == 0


async def test_an_unsigned_sendgrid_batch_is_rejected(hooks: Webhooks) -> None:
    response = await hooks.app.client.post("/webhooks/sendgrid", json=[{"event": "spamreport"}])

    assert response.status_code == 401


async def test_without_a_verification_key_sendgrid_batches_are_rejected(
    hooks: Webhooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks.app.settings.sendgrid_public_key = None
    event = {"email": "reader@example.com", "event": "spamreport", "sg_event_id": "sg-1", "timestamp": 1}

    assert (await hooks.sendgrid([event])).status_code == 403


async def test_a_signed_sendgrid_body_that_is_not_json_is_answered_400(hooks: Webhooks) -> None:
    stamp = str(int(time.time()))
    body = b"{not json"
    signature = hooks.sendgrid_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }

    response = await hooks.app.client.post("/webhooks/sendgrid", content=body, headers=headers)

    assert response.status_code == 400


async def test_sendgrid_events_repeated_in_and_across_batches_count_once(hooks: Webhooks) -> None:
    [reader] = await add_confirmed(hooks.app.pool, 1)
    blocked = {
        "email": reader,
        "event": "bounce",
        "type": "blocked",
        "sg_event_id": "sg-same",
        "timestamp": 1,
    }

    first = await hooks.sendgrid([blocked, blocked, blocked])
    again = await hooks.sendgrid([blocked])

    assert first.json() == {"received": 3, "recorded": 1}
    assert again.json() == {"received": 1, "recorded": 0}
    assert await hooks.suppression(reader) is None


# Postmark


def postmark_bounce(address: str, bounce_type: str = "HardBounce", record_id: int = 1) -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "ID": record_id,
        "Type": bounce_type,
        "TypeCode": 1,
        "MessageID": str(uuid.uuid4()),
        "Email": address,
        "BouncedAt": "2026-11-28T11:59:58.9070259Z",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
    }


@pytest.mark.parametrize(
    "auth", [None, ("postmark", "wrong"), ("someone", POSTMARK_AUTH[1]), (POSTMARK_AUTH[1], POSTMARK_AUTH[0])]
)
async def test_postmark_without_the_right_credentials_gets_401(
    hooks: Webhooks, auth: tuple[str, str] | None
) -> None:
    [reader] = await add_confirmed(hooks.app.pool, 1)

    response = await hooks.postmark(postmark_bounce(reader), auth=auth)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert await hooks.suppression(reader) is None


async def test_without_configured_credentials_postmark_gets_401(
    hooks: Webhooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks.app.settings.postmark_webhook_user = None
    hooks.app.settings.postmark_webhook_password = None

    assert (await hooks.postmark(postmark_bounce("reader@example.com"))).status_code == 401
    assert (await hooks.postmark(postmark_bounce("reader@example.com"), auth=("", ""))).status_code == 401


async def test_a_postmark_hard_bounce_with_the_right_credentials_suppresses(hooks: Webhooks) -> None:
    [reader] = await add_confirmed(hooks.app.pool, 1)

    response = await hooks.postmark(postmark_bounce(reader))

    assert response.status_code == 200, response.text
    assert await hooks.suppression(reader) == "hard_bounce"
    assert await hooks.app.subscription_status(reader) == "unsubscribed"


async def test_three_soft_bounces_suppress_and_two_do_not(hooks: Webhooks) -> None:
    two, three = await add_confirmed(hooks.app.pool, 2)

    for record_id in (1, 2):
        await hooks.postmark(postmark_bounce(two, "SoftBounce", record_id))
    for record_id in (11, 12, 13):
        await hooks.postmark(postmark_bounce(three, "Transient", record_id))

    assert await hooks.suppression(two) is None
    assert await hooks.app.subscription_status(two) == "confirmed"
    assert await hooks.suppression(three) == "hard_bounce"
    assert await hooks.app.subscription_status(three) == "unsubscribed"


async def test_soft_bounces_older_than_the_window_do_not_count(hooks: Webhooks) -> None:
    [reader] = await add_confirmed(hooks.app.pool, 1)
    old = {**postmark_bounce(reader, "SoftBounce", 1), "BouncedAt": "2020-01-01T00:00:00Z"}
    await hooks.postmark(old)
    await hooks.postmark(postmark_bounce(reader, "SoftBounce", 2))
    await hooks.postmark(postmark_bounce(reader, "SoftBounce", 3))

    assert await hooks.suppression(reader) is None


async def test_a_postmark_spam_complaint_unsubscribes_from_every_list(
    hooks: Webhooks, admin: AdminClient
) -> None:
    await admin.post("/lists", {"slug": "weekly", "name": "Weekly"})
    [reader] = await add_confirmed(hooks.app.pool, 1)
    [other] = await add_confirmed(hooks.app.pool, 1, list_slug="weekly", prefix="other")
    await hooks.app.pool.execute(
        "INSERT INTO subscriptions (subscriber_id, list_id, status, confirmed_at) "
        "SELECT subscribers.id, lists.id, 'confirmed', now() FROM subscribers, lists "
        "WHERE subscribers.email = $1 AND lists.slug = 'weekly'",
        reader,
    )
    complaint = {
        "RecordType": "SpamComplaint",
        "ID": 42,
        "Type": "SpamComplaint",
        "Email": reader,
        "BouncedAt": "2026-11-28T11:59:58Z",
    }

    assert (await hooks.postmark(complaint)).status_code == 200

    assert await hooks.suppression(reader) == "complaint"
    assert await hooks.app.subscription_status(reader, "default") == "unsubscribed"
    assert await hooks.app.subscription_status(reader, "weekly") == "unsubscribed"
    assert await hooks.app.subscription_status(other, "weekly") == "confirmed"


async def test_a_complaint_outranks_an_unsubscribe_from_every_list(hooks: Webhooks) -> None:
    [reader] = await add_confirmed(hooks.app.pool, 1)
    await hooks.app.suppress(reader, SuppressionReason.UNSUBSCRIBE_ALL)
    complaint = {"RecordType": "SpamComplaint", "ID": 7, "Email": reader, "BouncedAt": "2026-11-28T11:59:58Z"}

    await hooks.postmark(complaint)

    assert await hooks.suppression(reader) == "complaint"


async def test_other_postmark_records_change_nothing(hooks: Webhooks) -> None:
    [reader] = await add_confirmed(hooks.app.pool, 1)

    auto_reply = await hooks.postmark(postmark_bounce(reader, "AutoResponder"))
    delivery = await hooks.postmark({"RecordType": "Delivery", "ID": 5, "Recipient": reader})

    assert auto_reply.json() == delivery.json() == {"received": 0, "recorded": 0}
    assert await hooks.suppression(reader) is None


async def test_wrong_postmark_credentials_are_throttled_like_token_guesses(hooks: Webhooks) -> None:
    [reader] = await add_confirmed(hooks.app.pool, 1)
    hooks.app.settings.token_guess_limit = 3

    wrong = [
        (await hooks.postmark(postmark_bounce(reader), auth=("postmark", f"guess {n}"))).status_code
        for n in range(4)
    ]
    right = await hooks.postmark(postmark_bounce(reader))

    assert wrong == [401, 401, 401, 429]
    assert right.status_code == 429 and int(right.headers["retry-after"]) > 0
    assert await hooks.suppression(reader) is None
