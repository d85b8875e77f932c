"""The SMTP client against a real server: pipelining or not, connection reuse, STARTTLS and AUTH."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from newsletter.config import EmailURL
from newsletter.transports.base import LEASE_EXPIRED, Failed, OutgoingEmail, Sent
from newsletter.transports.smtp import SMTPTransport
from tests.harness import SMTPHandler, SMTPServer, free_port

pytestmark = pytest.mark.asyncio

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\n.leading dot\r\nline\r\n"


def email(n: int, recipient: str = "b@example.com") -> OutgoingEmail:
    return OutgoingEmail(n, "a@example.com", recipient, MESSAGE)


QUEUED = b"250 2.0.0 queued\r\n"
Answer = Callable[[int, str, bytes], Awaitable[tuple[bytes, bool]]]


async def queued(_session: int, _recipient: str, _content: bytes) -> tuple[bytes, bool]:
    return QUEUED, False


@dataclass
class RawSMTP:
    """A bare SMTP server for what aiosmtpd cannot be made to do: it offers PIPELINING and nothing else (no
    SMTPUTF8), and `answer(session, recipient, content)` gives the reply to each message's content and whether
    the session ends after it. Counts sessions and keeps every RCPT address."""

    answer: Answer = queued
    recipients: list[str] = field(default_factory=list)
    sessions: int = 0

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        session, recipient = self.sessions, ""
        writer.write(b"220 ready\r\n")
        while line := await reader.readline():
            command = line.upper()
            if command.startswith(b"EHLO"):
                writer.write(b"250-raw\r\n250 PIPELINING\r\n")
            elif command.startswith(b"RCPT"):
                recipient = line.decode().split("<", 1)[1].split(">", 1)[0]
                self.recipients.append(recipient)
                writer.write(b"250 ok\r\n")
            elif command.startswith(b"DATA"):
                writer.write(b"354 go on\r\n")
                await writer.drain()
                reply, ends = await self.answer(session, recipient, await reader.readuntil(b"\r\n.\r\n"))
                writer.write(reply)
                if ends:
                    await writer.drain()
                    break
            elif command.startswith(b"QUIT"):
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    @asynccontextmanager
    async def transport(self, timeout: float) -> AsyncIterator[SMTPTransport]:
        """A one-connection transport to this server, closed (and the server with it) at the end."""
        server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = SMTPTransport(EmailURL.parse(f"smtp://127.0.0.1:{port}"), pool_size=1, timeout=timeout)
        try:
            yield transport
        finally:
            await transport.close()
            server.close()


def tagged(n: int) -> OutgoingEmail:
    """An email whose content names its recipient, so that a message under someone else's envelope shows."""
    recipient = f"r{n}@example.com"
    content = f"To: {recipient}\r\n\r\nfor {recipient}\r\n".encode()
    return OutgoingEmail(n, "a@example.com", recipient, content)


@pytest.mark.parametrize("pipelining", [True, False])
async def test_many_emails_over_few_reused_connections(smtp: SMTPServer, pipelining: bool) -> None:
    smtp.handler.pipelining = pipelining
    transport = SMTPTransport(EmailURL.parse(smtp.url), pool_size=3, timeout=5)

    results = await transport.send_batch([email(n, f"r{n}@example.com") for n in range(30)])
    await transport.close()

    assert all(isinstance(result, Sent) for result in results)
    assert sorted(m.recipients[0] for m in smtp.received) == sorted(f"r{n}@example.com" for n in range(30))
    assert smtp.handler.sessions <= 3
    # Dot-stuffing is undone by the server: the body arrives as it was written.
    assert smtp.received[0].raw.endswith(b"\r\n\r\n.leading dot\r\nline\r\n")


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_refused_recipient_does_not_spoil_the_connection(smtp: SMTPServer, pipelining: bool) -> None:
    smtp.handler.pipelining = pipelining
    smtp.handler.rejected["nobody@example.com"] = "550 5.1.1 unknown"
    smtp.handler.next_rcpt_replies.append("451 4.3.0 later")
    transport = SMTPTransport(EmailURL.parse(smtp.url), pool_size=1, timeout=5)

    results = [
        await transport.send(email(n, address))
        for n, address in enumerate(["first@example.com", "nobody@example.com", "third@example.com"])
    ]
    await transport.close()

    assert isinstance(results[0], Failed) and not results[0].permanent and results[0].error.startswith("451")
    assert isinstance(results[1], Failed) and results[1].permanent and results[1].recipient_rejected
    assert isinstance(results[2], Sent)
    assert [m.recipients for m in smtp.received] == [["third@example.com"]]
    assert smtp.handler.sessions == 1


async def test_a_server_that_stalls_times_out_as_a_transient_failure() -> None:
    async def stall(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)
        writer.close()

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = SMTPTransport(EmailURL.parse(f"smtp://127.0.0.1:{port}"), pool_size=1, timeout=0.3)

    result = await transport.send(email(1))
    server.close()

    assert isinstance(result, Failed) and not result.permanent


async def test_non_ascii_recipients_use_smtputf8(smtp: SMTPServer) -> None:
    transport = SMTPTransport(EmailURL.parse(smtp.url), pool_size=1, timeout=5)

    result = await transport.send(email(1, "jürgen@example.com"))
    await transport.close()

    assert isinstance(result, Sent)
    assert smtp.received[0].recipients == ["jürgen@example.com"]


async def test_a_relay_without_smtputf8_fails_non_ascii_addresses_without_suppressing_them() -> None:
    """Our relay's limit is not the recipient's refusal: the email fails (retrying the same relay cannot
    help) but the address is not marked rejected, so it is not suppressed; the others go out."""
    relay = RawSMTP()

    async with relay.transport(timeout=5) as transport:
        results = await transport.send_batch(
            [email(1, "ada@example.com"), email(2, "jürgen@example.com"), email(3, "grace@example.com")]
        )

    assert isinstance(results[0], Sent) and isinstance(results[2], Sent)
    refused = results[1]
    assert isinstance(refused, Failed) and refused.permanent and not refused.recipient_rejected
    assert "SMTPUTF8" in refused.error
    assert relay.recipients == ["ada@example.com", "grace@example.com"]


async def test_near_the_deadline_an_email_is_left_unsent_rather_than_cut_off_after_its_content() -> None:
    """A slow server (3.2 s to accept each message) and a batch with 4 s left: the first email goes out; the
    second, already announced, would have its content written with too little time left to hear the answer
    (a timeout after the content means a copy on the next attempt). It is not started: an email starts only
    with a quarter of the batch's time left (or 5 s, or its timeout, if less)."""
    received: list[bytes] = []

    async def slowly(_session: int, _recipient: str, content: bytes) -> tuple[bytes, bool]:
        await asyncio.sleep(3.2)
        received.append(content)
        return QUEUED, False

    async with RawSMTP(slowly).transport(timeout=3.8) as transport:
        results = await transport.send_batch([tagged(1), tagged(2)], deadline=time.monotonic() + 4)

    assert isinstance(results[0], Sent)
    assert results[1] == LEASE_EXPIRED
    assert len(received) == 1 and b"for r1@example.com" in received[0]


async def test_an_email_that_breaks_the_client_fails_alone(smtp: SMTPServer) -> None:
    """A fault of ours inside a batch (here a message that is not bytes) fails that email; the batch goes
    on and reports the others, so that what was sent is recorded and not sent again."""
    transport = SMTPTransport(EmailURL.parse(smtp.url), pool_size=1, timeout=5)
    broken = OutgoingEmail(2, "a@example.com", "r2@example.com", cast(bytes, "not bytes"))

    results = await transport.send_batch([tagged(1), broken, tagged(3)])
    await transport.close()

    assert isinstance(results[0], Sent) and isinstance(results[2], Sent)
    assert isinstance(results[1], Failed) and not results[1].permanent
    assert sorted(email.recipients[0] for email in smtp.received) == ["r1@example.com", "r3@example.com"]


class Authenticator:
    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"mailer", b"s3cret:pass")
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


async def test_starttls_and_auth(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    key, cert = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = SMTPHandler()
    port = free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
        authenticator=Authenticator(), auth_required=True,
    )  # fmt: skip
    controller.start()
    # Trust the test's own certificate authority, as an operator's system trusts theirs.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    try:
        good = SMTPTransport(
            EmailURL.parse(f"smtp://mailer:s3cret%3Apass@127.0.0.1:{port}?tls=starttls"),
            pool_size=1,
            timeout=5,
        )
        bad = SMTPTransport(
            EmailURL.parse(f"smtp://mailer:wrong@127.0.0.1:{port}?tls=starttls"), pool_size=1, timeout=5
        )
        plain = SMTPTransport(EmailURL.parse(f"smtp://127.0.0.1:{port}"), pool_size=1, timeout=5)

        sent = await good.send(email(1))
        refused = await bad.send(email(2))
        without_tls = await plain.send(email(3))
        for transport in (good, bad, plain):
            await transport.close()
    finally:
        controller.stop()

    assert isinstance(sent, Sent)
    assert isinstance(refused, Failed) and not refused.permanent, "bad credentials keep the email"
    assert isinstance(without_tls, Failed) and not without_tls.permanent
    assert len(handler.received) == 1


@pytest.mark.parametrize("pipelining", [True, False])
async def test_each_outcome_of_a_batch_belongs_to_its_own_email(smtp: SMTPServer, pipelining: bool) -> None:
    """With pipelining the next email's envelope travels with the end of the current one: refusals at every
    stage, one after another on one connection, must still land on the right email."""
    smtp.handler.pipelining = pipelining
    smtp.handler.rejected["nobody@example.com"] = "550 5.1.1 unknown"
    smtp.handler.rejected["later@example.com"] = "451 4.3.0 later"
    smtp.handler.refused_content["spam@example.com"] = "554 5.7.1 content refused"
    addresses = [
        "first@example.com",
        "nobody@example.com",
        "spam@example.com",
        "later@example.com",
        "spam@example.com",
        "last@example.com",
    ]
    transport = SMTPTransport(EmailURL.parse(smtp.url), pool_size=1, timeout=5)

    results = await transport.send_batch([email(n, address) for n, address in enumerate(addresses)])
    await transport.close()

    assert [type(result).__name__ for result in results] == [
        "Sent",
        "Failed",
        "Failed",
        "Failed",
        "Failed",
        "Sent",
    ]
    failures = [result for result in results if isinstance(result, Failed)]
    assert [failure.error[:3] for failure in failures] == ["550", "554", "451", "554"]
    assert [failure.permanent for failure in failures] == [True, True, False, True]
    assert failures[0].recipient_rejected and not failures[1].recipient_rejected
    assert [m.recipients for m in smtp.received] == [["first@example.com"], ["last@example.com"]]
    assert smtp.handler.sessions == 1


@pytest.mark.parametrize("closing", ["every session", "the first session"])
async def test_a_session_the_server_closes_after_an_email_loses_and_repeats_nothing(closing: str) -> None:
    """A server that ends a session after one email (as some do after a message limit, or an idle pooled
    session closed with a 421), while the client has already announced the next envelope: that email, whose
    content never went out, is sent on a new session, once, and every content goes out under its own
    recipient's envelope."""
    received: list[tuple[str, str]] = []  # (envelope recipient, the recipient the content was written for)

    async def one_per_session(session: int, recipient: str, content: bytes) -> tuple[bytes, bool]:
        received.append((recipient, content.split(b"for ", 1)[1].split(b"\r\n", 1)[0].decode()))
        if closing == "every session" or session == 1:
            return QUEUED + b"421 4.7.0 one per session, bye\r\n", True
        return QUEUED, False

    limited = RawSMTP(one_per_session)
    async with limited.transport(timeout=5) as transport:
        results = await transport.send_batch([tagged(n) for n in range(5)])

    assert all(isinstance(result, Sent) for result in results), results
    assert sorted(received) == [(f"r{n}@example.com", f"r{n}@example.com") for n in range(5)]
    assert limited.sessions == (5 if closing == "every session" else 2)
