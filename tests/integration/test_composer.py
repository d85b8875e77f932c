"""The composer sends the messages the code before it sent, byte for byte, but for what differs on every send
(Date, Message-ID, the MIME boundary, a confirmation link's token): tests/data/messages holds what the worker
sent before the composer existed, for the same people, lists and issue; since then, the newsletter's footer
gained one thing, the "manage your subscription" link of the preference page (issue 16)."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from newsletter.transports.memory import MemoryTransport
from tests.harness import SMTPServer, TestApp, spawn_app

pytestmark = pytest.mark.asyncio

REFERENCE = Path(__file__).parent.parent / "data" / "messages"
MARKDOWN = (
    "# Spring news\n\nHello **readers**, the [programme](https://example.com/programme?year=2026&lang=en)"
    " is out:\n\n- talks on Friday\n- workshops on Saturday\n\n" + "A long paragraph of news, " * 20
)
SENT_EVERY_TIME_ANEW = [
    (rb'boundary="=_nl_[0-9a-f]{24}"', b'boundary="BOUNDARY"'),
    (rb"--=_nl_[0-9a-f]{24}", b"--BOUNDARY"),
    (rb"Date: [^\r]+\r\n", b"Date: DATE\r\n"),
    (rb"Message-ID: <[^>]+>\r\n", b"Message-ID: <ID>\r\n"),
]


def _as_sent_every_time(raw: bytes) -> bytes:
    for pattern, replacement in SENT_EVERY_TIME_ANEW:
        raw = re.sub(pattern, replacement, raw)
    return raw


@pytest.fixture
async def garden(database_url: str, smtp: SMTPServer) -> AsyncIterator[TestApp]:
    async with spawn_app(
        database_url,
        smtp,
        email_url="memory://",
        sender="Garden News <news@example.com>",
        base_url="https://news.example.com",
        secret_key="s" * 40,
    ) as app:
        await app.pool.execute("UPDATE lists SET name = 'Weekly Garden Notes' WHERE slug = 'default'")
        yield app


async def _sent(app: TestApp) -> dict[str, bytes]:
    await app.dispatch_all_pending()
    transport = app.worker.transport
    assert isinstance(transport, MemoryTransport)
    return {sent.recipient: sent.message for sent in transport.outbox}


async def test_a_newsletter_is_byte_for_byte_what_was_sent_before(garden: TestApp) -> None:
    await garden.add_subscriber("ada@example.com", name="Ada")
    await garden.send_issue("Spring news: the programme", MARKDOWN)

    sent = (await _sent(garden))["ada@example.com"]

    reference = (REFERENCE / "newsletter.eml").read_bytes()
    assert _as_sent_every_time(sent) == _as_sent_every_time(reference)


async def test_a_confirmation_is_what_was_sent_before(garden: TestApp) -> None:
    """Its link's token is new on every send and splits across quoted-printable lines: the headers are
    compared as bytes, the bodies as text with the token taken out."""
    await garden.client.post("/subscriptions", json={"email": "grace@example.com", "name": "Grace"})

    sent = (await _sent(garden))["grace@example.com"]

    reference = (REFERENCE / "confirmation.eml").read_bytes()
    head, reference_head = (raw.split(b"\r\n\r\n", 1)[0] for raw in (sent, reference))
    assert _as_sent_every_time(head) == _as_sent_every_time(reference_head)
    for subtype in ("plain", "html"):
        bodies = [
            re.sub(r"token=[A-Za-z0-9_-]{43}", "token=TOKEN", _body(raw, subtype))
            for raw in (sent, reference)
        ]
        assert bodies[0] == bodies[1]


def _body(raw: bytes, subtype: str) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    part = message.get_body((subtype,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content
