"""The Postmark transport against a real HTTP server on 127.0.0.1 that answers as Postmark's batch API."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from newsletter.config import EmailURL
from newsletter.transports import postmark as postmark_module
from newsletter.transports.base import Failed, OutgoingEmail, Sent
from newsletter.transports.postmark import PostmarkTransport
from tests.harness import SMTPServer, free_port, spawn_app

pytestmark = pytest.mark.asyncio

TOKEN = "test-token"
SENDER = Address(display_name="Example News", username="news", domain="example.com")


@dataclass
class Call:
    headers: dict[str, str]
    body: Any


@dataclass
class PostmarkServer:
    """Postmark's /email/batch on its own port: checks the token, answers per message, can be scripted."""

    token: str = TOKEN
    port: int = 0
    calls: list[Call] = field(default_factory=list)
    # Messages Postmark accepted, each with the MessageID it answered.
    accepted: list[dict[str, Any]] = field(default_factory=list)
    # recipient -> (ErrorCode, Message) answered for that message within a 200 answer
    error_codes: dict[str, tuple[int, str]] = field(default_factory=dict)
    # whole-request answers for the next calls: (status, headers, JSON body)
    next_answers: deque[tuple[int, dict[str, str], Any]] = field(default_factory=deque)

    @property
    def url(self) -> str:
        return f"postmark://{TOKEN}@127.0.0.1:{self.port}"

    async def batch(self, request: Request) -> Response:
        body = await request.json()
        self.calls.append(Call(dict(request.headers), body))
        if request.headers.get("x-postmark-server-token") != self.token:
            return JSONResponse({"ErrorCode": 10, "Message": "Bad or missing Server API token."}, 401)
        if self.next_answers:
            status, headers, content = self.next_answers.popleft()
            return JSONResponse(content, status, headers)
        if request.headers.get("content-type") != "application/json" or not isinstance(body, list):
            return JSONResponse({"ErrorCode": 409, "Message": "JSON request required."}, 422)
        if len(body) > 500:
            return JSONResponse({"ErrorCode": 410, "Message": "Too many batch messages."}, 422)
        return JSONResponse([self._answer(message) for message in body])

    def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        to = message.get("To", "")
        if to in self.error_codes:
            code, text = self.error_codes[to]
            return {"ErrorCode": code, "Message": text}
        if not message.get("From") or not (message.get("TextBody") or message.get("HtmlBody")):
            return {"ErrorCode": 300, "Message": "Invalid email request"}
        message_id = str(uuid.uuid4())
        self.accepted.append({**message, "MessageID": message_id})
        return {
            "ErrorCode": 0,
            "Message": "OK",
            "MessageID": message_id,
            "SubmittedAt": "2024-01-01T00:00:00Z",
            "To": to,
        }

    def to(self, address: str) -> list[dict[str, Any]]:
        return [message for message in self.accepted if message["To"] == address]


@pytest.fixture
async def postmark() -> AsyncIterator[PostmarkServer]:
    fake = PostmarkServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    fake.port = sock.getsockname()[1]
    app = Starlette(routes=[Route("/email/batch", fake.batch, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield fake
    finally:
        server.should_exit = True
        await serving
        sock.close()


@pytest.fixture
async def transport(postmark: PostmarkServer) -> AsyncIterator[PostmarkTransport]:
    transport = PostmarkTransport(EmailURL.parse(postmark.url), timeout=5)
    yield transport
    await transport.close()


def outgoing(recipient: str, delivery_id: int = 1, **headers: str) -> OutgoingEmail:
    """A multipart/alternative message as the app sends them; `List_Id=...` adds a `List-Id` header."""
    message = EmailMessage(policy=SMTP)
    message["From"] = SENDER
    message["To"] = recipient
    message["Subject"] = "Issue 1: Größe"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="example.com")
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("Hello, reader.\n", cte="quoted-printable")
    message.add_alternative("<p>Hello, reader.</p>\n", subtype="html", cte="quoted-printable")
    return OutgoingEmail(delivery_id, SENDER.addr_spec, recipient, message.as_bytes())


async def test_one_inactive_recipient_fails_for_good_and_the_others_are_sent(
    postmark: PostmarkServer, transport: PostmarkTransport
) -> None:
    postmark.error_codes["gone@example.com"] = (
        406,
        "You tried to send to a recipient that was marked inactive.",
    )
    emails = [outgoing("a@example.com", 1), outgoing("gone@example.com", 2), outgoing("b@example.com", 3)]

    results = await transport.send_batch(emails)

    [call] = postmark.calls
    assert call.headers["x-postmark-server-token"] == TOKEN
    assert call.headers["accept"] == "application/json"
    assert [message["To"] for message in call.body] == ["a@example.com", "gone@example.com", "b@example.com"]
    ids = {message["To"]: message["MessageID"] for message in postmark.accepted}
    assert results[0] == Sent(ids["a@example.com"])
    assert results[2] == Sent(ids["b@example.com"])
    failed = results[1]
    assert isinstance(failed, Failed)
    assert (failed.permanent, failed.recipient_rejected) == (True, True)
    assert failed.error.startswith("Postmark 406")


async def test_per_message_codes_invalid_request_is_permanent_rate_limit_is_transient(
    postmark: PostmarkServer, transport: PostmarkTransport
) -> None:
    postmark.error_codes["bad@example.com"] = (300, "Invalid email request")
    postmark.error_codes["slow@example.com"] = (429, "Rate limit exceeded")

    bad, slow = await transport.send_batch([outgoing("bad@example.com"), outgoing("slow@example.com")])

    assert bad == Failed("Postmark 300: Invalid email request", permanent=True)
    assert slow == Failed("Postmark 429: Rate limit exceeded", permanent=False)


async def test_429_fails_the_whole_batch_transiently_with_retry_after(
    postmark: PostmarkServer, transport: PostmarkTransport
) -> None:
    postmark.next_answers.append((429, {"Retry-After": "7"}, {"ErrorCode": 429, "Message": "Slow down"}))

    results = await transport.send_batch([outgoing("a@example.com", 1), outgoing("b@example.com", 2)])

    assert len(results) == 2
    for result in results:
        assert isinstance(result, Failed)
        assert (result.permanent, result.retry_after) == (False, 7.0)
        assert result.error.startswith("HTTP 429")
    assert postmark.accepted == []


async def test_500_fails_the_whole_batch_transiently(
    postmark: PostmarkServer, transport: PostmarkTransport
) -> None:
    postmark.next_answers.append((500, {}, {"ErrorCode": 0, "Message": "Internal Server Error"}))

    results = await transport.send_batch([outgoing("a@example.com", 1), outgoing("b@example.com", 2)])

    assert all(isinstance(r, Failed) and not r.permanent and r.retry_after is None for r in results)
    assert len(results) == 2


async def test_422_for_the_whole_request_is_permanent_and_suppresses_nobody(
    postmark: PostmarkServer, transport: PostmarkTransport
) -> None:
    postmark.next_answers.append((422, {}, {"ErrorCode": 300, "Message": "Invalid email request"}))

    [result] = await transport.send_batch([outgoing("a@example.com")])

    assert result == Failed("HTTP 422: Postmark 300: Invalid email request", permanent=True)


async def test_600_emails_go_out_in_two_requests_of_500_and_100_in_order(
    postmark: PostmarkServer, transport: PostmarkTransport
) -> None:
    raw = outgoing("reader@example.com").message  # one message, 600 recipients: quicker than 600 builds
    emails = [
        OutgoingEmail(n, SENDER.addr_spec, f"reader{n}@example.com", raw.replace(b"r@", b"r%d@" % n))
        for n in range(600)
    ]

    results = await transport.send_batch(emails)

    assert [len(call.body) for call in postmark.calls] == [500, 100]
    ids = {message["To"]: message["MessageID"] for message in postmark.accepted}
    assert results == [Sent(ids[email.recipient]) for email in emails]


async def test_requests_also_stay_under_postmarks_size_limit(
    postmark: PostmarkServer, transport: PostmarkTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    emails = [outgoing(f"reader{n}@example.com", n) for n in range(5)]
    monkeypatch.setattr(postmark_module, "MAX_REQUEST_BYTES", 2 * len(emails[0].message) + 10)

    results = await transport.send_batch(emails)

    assert [len(call.body) for call in postmark.calls] == [2, 2, 1]
    assert all(isinstance(result, Sent) for result in results)


async def test_headers_and_bodies_survive_the_conversion(
    postmark: PostmarkServer, transport: PostmarkTransport
) -> None:
    unsubscribe = "<https://news.example.com/unsubscribe?token=" + "x" * 120 + ">, <mailto:u@example.com>"
    email = outgoing(
        "reader@example.com",
        List_Id="Example News <news.example.com>",
        List_Unsubscribe=unsubscribe,
        List_Unsubscribe_Post="List-Unsubscribe=One-Click",
    )

    [result] = await transport.send_batch([email])

    assert isinstance(result, Sent)
    [message] = postmark.accepted
    assert message["From"] == "Example News <news@example.com>"
    assert message["To"] == "reader@example.com"
    assert message["Subject"] == "Issue 1: Größe"
    assert message["TextBody"] == "Hello, reader.\n"
    assert message["HtmlBody"] == "<p>Hello, reader.</p>\n"
    assert message["MessageStream"] == "broadcast"
    headers = {header["Name"]: header["Value"] for header in message["Headers"]}
    assert headers["List-Unsubscribe"] == unsubscribe
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Id"] == "Example News <news.example.com>"
    assert headers["Message-ID"].startswith("<") and headers["Message-ID"].endswith("@example.com>")
    assert not {"From", "To", "Subject", "Date", "MIME-Version", "Content-Type"} & set(headers)


async def test_a_wrong_token_is_a_transient_failure(postmark: PostmarkServer) -> None:
    transport = PostmarkTransport(EmailURL.parse(f"postmark://wrong-token@127.0.0.1:{postmark.port}"))
    try:
        results = await transport.send_batch([outgoing("a@example.com", 1), outgoing("b@example.com", 2)])
    finally:
        await transport.close()

    assert [call.headers["x-postmark-server-token"] for call in postmark.calls] == ["wrong-token"]
    for result in results:
        assert isinstance(result, Failed)
        assert not result.permanent and not result.recipient_rejected
        assert result.error.startswith("HTTP 401")


async def test_an_unreachable_server_is_a_transient_failure() -> None:
    transport = PostmarkTransport(EmailURL.parse(f"postmark://{TOKEN}@127.0.0.1:{free_port()}"), timeout=2)
    try:
        [result] = await transport.send_batch([outgoing("a@example.com")])
    finally:
        await transport.close()

    assert isinstance(result, Failed)
    assert not result.permanent
    assert "ConnectError" in result.error


async def test_postmark_itself_is_reached_over_https() -> None:
    transport = PostmarkTransport(EmailURL.parse("postmark://token@"))
    assert transport.endpoint == "https://api.postmarkapp.com/email/batch"


async def test_the_app_sends_its_confirmation_email_through_postmark(
    database_url: str, postmark: PostmarkServer
) -> None:
    async with spawn_app(database_url, SMTPServer(), email_url=postmark.url) as app:
        assert (await app.subscribe("ada@example.com")).status_code == 202
        await app.dispatch_all_pending()

        [message] = postmark.to("ada@example.com")
        assert message["MessageStream"] == "outbound"
        [row] = await app.deliveries("ada@example.com")
        assert row["status"] == "sent"
        assert row["provider_message_id"] == message["MessageID"]

        [link] = [word for word in message["TextBody"].split() if "/subscriptions/confirm?" in word]
        assert link in message["HtmlBody"]
        assert (await app.confirm(link)).status_code == 200
        assert await app.subscription_status("ada@example.com") == "confirmed"


async def test_a_wrong_token_keeps_the_email_until_the_token_is_fixed(
    database_url: str, postmark: PostmarkServer
) -> None:
    postmark.token = "the-real-token"
    async with spawn_app(database_url, SMTPServer(), email_url=postmark.url) as app:
        await app.subscribe("ada@example.com")
        await app.dispatch_all_pending()
        [row] = await app.deliveries("ada@example.com")
        assert row["status"] == "queued"
        assert row["last_error"].startswith("HTTP 401")

        postmark.token = TOKEN  # the operator fixes the configuration
        await asyncio.sleep(0.2)
        await app.dispatch_all_pending()

        assert len(postmark.to("ada@example.com")) == 1
        [row] = await app.deliveries("ada@example.com")
        assert row["status"] == "sent"
        assert row["attempts"] >= 2  # the drain may have met the wrong token more than once
        assert row["provider_message_id"] == postmark.to("ada@example.com")[0]["MessageID"]
