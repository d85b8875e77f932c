"""SMTP over a pool of reused connections, with command pipelining (RFC 2920).

aiosmtplib waits for each reply before the next command and states that pipelined commands lose replies, so an
email costs it four round trips. Here the envelope (MAIL, RCPT, DATA) goes out in one write when the server
offers PIPELINING, and within a batch the next email's envelope goes out in the same write as the end of the
current one's content (RFC 2920 3.1: DATA must end a group, the content's end may begin one), so that an email
costs one round trip and one write: what makes a single worker process send thousands per second.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import structlog

from newsletter.config import EmailURL
from newsletter.transports.base import (
    LEASE_EXPIRED,
    OutgoingEmail,
    SendResult,
    Sent,
    SMTPError,
    classify_smtp_error,
    time_left,
)

log = structlog.get_logger(__name__)

CRLF = b"\r\n"
# What an address must not hold to be written into a command: line ends, and the brackets around it.
_UNCARRIABLE = re.compile(r"[\r\n<>]")
# An email starts only with this long before the batch's deadline (or less: its whole timeout, or a quarter of
# the batch's time, if shorter): one started later would likely be cut off after its content went out, and
# then be sent again.
MIN_SEND_SECONDS = 5.0
# A reply line longer than this is not SMTP (RFC 5321 allows 512 octets).
MAX_REPLY_LINE = 1 << 16


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: bytes  # its lines, without their codes, one per line

    @property
    def message(self) -> str:
        return self.text.decode("utf-8", "replace")


class _Replies(asyncio.Protocol):
    """The server's side of a session: its replies, parsed as they arrive and handed out in order.

    A pipelined email's replies usually arrive in one segment; `next(n)` then returns them without waiting,
    where a stream reader would wake the sender once for each line.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._lines: list[bytes] = []
        self._ready: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 0
        self._error: BaseException | None = None
        # When (the loop's clock) the replies being waited for are given up for: the email's time limit.
        self.deadline: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without deriving from it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_REPLY_LINE:
            self._fail(SMTPError("connect", 500, "a reply line without end"))
            return
        for line in complete:
            if len(line) < 4 or not line[:3].isdigit():
                self._fail(SMTPError("connect", 500, f"malformed reply {line[:80]!r}"))
                return
            self._lines.append(line[4:].strip())
            if line[3:4] != b"-":
                self._ready.append(Reply(int(line[:3]), b"\n".join(self._lines)))
                self._lines = []
        if self._waiter is not None and len(self._ready) >= self._wanted and not self._waiter.done():
            self._waiter.set_result(None)

    def eof_received(self) -> bool:
        self._fail(ConnectionResetError("the SMTP server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the SMTP server closed the connection"))

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        if isinstance(error, SMTPError) and self.transport is not None:
            self.transport.close()

    @property
    def failed(self) -> bool:
        return self._error is not None

    async def next(self, count: int) -> list[Reply]:
        """The next `count` replies; raises what ended the session if it ends first, and TimeoutError past
        the deadline. Replies already here are returned without waiting (nor any timer)."""
        while len(self._ready) < count:
            if self._error is not None:
                raise self._error
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            self._wanted = count
            timer = loop.call_at(self.deadline, self._time_out) if self.deadline is not None else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return [self._ready.popleft() for _ in range(count)]

    def _time_out(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(TimeoutError("the SMTP server did not answer in time"))


class SMTPConnection:
    """One SMTP session, ready to send after greeting, EHLO, STARTTLS and AUTH."""

    def __init__(self, transport: asyncio.Transport, replies: _Replies) -> None:
        self.transport = transport
        self.replies = replies
        self.extensions: set[str] = set()
        self.auth_mechanisms: set[str] = set()
        self.content_sent = False

    @classmethod
    async def open(cls, url: EmailURL, local_hostname: str) -> SMTPConnection:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if url.tls != "none" else None
        transport, replies = await loop.create_connection(
            _Replies, url.host, url.port, ssl=context if url.tls == "ssl" else None
        )
        connection = cls(transport, replies)
        try:
            await connection._expect("connect", 220)
            await connection._ehlo(local_hostname)
            if url.tls == "starttls":
                if "STARTTLS" not in connection.extensions:
                    raise SMTPError("connect", 530, "the server does not offer STARTTLS")
                await connection._command("connect", b"STARTTLS", 220)
                assert context is not None
                secure = await loop.start_tls(transport, replies, context, server_hostname=url.host)
                assert secure is not None
                connection.transport = replies.transport = secure
                await connection._ehlo(local_hostname)
            if url.username:
                await connection._login(url.username, url.password or "")
        except BaseException:
            connection.close()
            raise
        return connection

    @property
    def is_open(self) -> bool:
        return not self.transport.is_closing() and not self.replies.failed

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.extensions

    def envelope(self, sender: str, recipient: str) -> tuple[bytes, bytes]:
        """MAIL and RCPT for one email; raises SMTPError for an address this session cannot carry."""
        if _UNCARRIABLE.search(sender) or _UNCARRIABLE.search(recipient):
            raise SMTPError("rcpt", 553, "address contains characters SMTP cannot carry")
        utf8 = not (sender.isascii() and recipient.isascii())
        if utf8 and "SMTPUTF8" not in self.extensions:
            # A limit of our relay, not a refusal of the address by its mailbox's server: failed, not
            # suppressed (stage "mail"), so that it can be retried through a relay that offers SMTPUTF8.
            raise SMTPError("mail", 553, "non-ASCII address and the server does not offer SMTPUTF8")
        mail = f"MAIL FROM:<{sender}>{' SMTPUTF8' if utf8 else ''}\r\n".encode()
        return mail, f"RCPT TO:<{recipient}>\r\n".encode()

    async def send(
        self,
        sender: str,
        recipient: str,
        message: bytes,
        *,
        announced: bool = False,
        then: bytes = b"",
    ) -> str:
        """Send one message; returns the server's final reply, raises SMTPError with the failing stage.

        `announced`: this email's envelope already went out (as the `then` of the previous send). `then`: a
        pipelined envelope written with the end of this message's content; it went out if `self.content_sent`,
        and its replies then follow this message's final reply."""
        self.content_sent = False
        mail, rcpt = self.envelope(sender, recipient)
        if announced or self.pipelining:
            if not announced:
                self.transport.write(mail + rcpt + b"DATA\r\n")
            replies = await self.replies.next(3)
        else:
            replies = []
            for command in (mail, rcpt, b"DATA\r\n"):
                self.transport.write(command)
                replies += await self.replies.next(1)
                if replies[-1].code >= 400:
                    break
        for stage, expected, reply in zip(("mail", "rcpt", "data"), (250, 250, 354), replies, strict=False):
            if reply.code != expected and not (stage == "rcpt" and reply.code == 251):
                if replies[-1].code == 354:
                    # The server took DATA although the envelope failed: end it empty, then reset.
                    self.transport.write(b".\r\n")
                    await self.replies.next(1)
                await self._reset()
                raise SMTPError(stage, reply.code, reply.message)
        # Dot-stuffing (RFC 5321 4.5.2); messages from our composer already end lines with CRLF.
        body = message.replace(b"\r\n.", b"\r\n..")
        if body.startswith(b"."):
            body = b"." + body
        if not body.endswith(CRLF):
            body += CRLF
        self.content_sent = True
        self.transport.writelines((body, b".\r\n" + then))
        [final] = await self.replies.next(1)
        if final.code != 250:
            raise SMTPError("data", final.code, final.message)
        return final.message

    async def quit(self) -> None:
        try:
            self.transport.write(b"QUIT\r\n")
            await self.replies.next(1)
        finally:
            self.close()

    def close(self) -> None:
        self.transport.close()

    async def _reset(self) -> None:
        self.transport.write(b"RSET\r\n")
        await self.replies.next(1)

    async def _ehlo(self, local_hostname: str) -> None:
        reply = await self._command("connect", f"EHLO {local_hostname}".encode(), 250)
        offered = [line.upper().replace("=", " ").split() for line in reply.message.splitlines()[1:]]
        self.extensions = {words[0] for words in offered if words}
        self.auth_mechanisms = {
            name for words in offered if words and words[0] == "AUTH" for name in words[1:]
        }

    async def _login(self, username: str, password: str) -> None:
        if "PLAIN" in self.auth_mechanisms:
            secret = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
            await self._command("connect", f"AUTH PLAIN {secret}".encode(), 235)
        elif "LOGIN" in self.auth_mechanisms:
            await self._command("connect", b"AUTH LOGIN", 334)
            await self._command("connect", base64.b64encode(username.encode()), 334)
            await self._command("connect", base64.b64encode(password.encode()), 235)
        else:
            raise SMTPError("connect", 504, "the server offers neither AUTH PLAIN nor AUTH LOGIN")

    async def _command(self, stage: str, command: bytes, expected: int) -> Reply:
        self.transport.write(command + CRLF)
        return await self._expect(stage, expected)

    async def _expect(self, stage: str, expected: int) -> Reply:
        [reply] = await self.replies.next(1)
        if reply.code != expected:
            raise SMTPError(stage, reply.code, reply.message)
        return reply


class SMTPTransport:
    """Sends over a pool of reused SMTP connections, at most `pool_size` at a time."""

    def __init__(
        self, url: EmailURL, *, pool_size: int, timeout: float, local_hostname: str = "localhost"
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.local_hostname = local_hostname
        self._pool_size = pool_size
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[SMTPConnection] = []

    async def send_batch(
        self, emails: Sequence[OutgoingEmail], deadline: float | None = None
    ) -> list[SendResult]:
        """Each connection takes the next waiting email until none is left: one task per connection, not per
        email. With PIPELINING, a connection takes its next email before ending the current one, and
        announces it in the same write."""
        results: list[SendResult | None] = [None] * len(emails)
        waiting = iter(range(len(emails)))
        senders = min(self._pool_size, len(emails))
        reserve = 0.0
        if deadline is not None:
            reserve = min(self.timeout, MIN_SEND_SECONDS, (deadline - time.monotonic()) / 4)
        await asyncio.gather(
            *(self._sender(emails, waiting, results, deadline, reserve) for _ in range(senders))
        )
        return [result for result in results if result is not None]

    async def _sender(
        self,
        emails: Sequence[OutgoingEmail],
        waiting: Iterator[int],
        results: list[SendResult | None],
        deadline: float | None,
        reserve: float,
    ) -> None:
        """One connection's share of a batch, in order: `mine` holds what it took from `waiting` ahead. An
        email starts only with `reserve` seconds left before the deadline."""
        loop = asyncio.get_running_loop()
        async with self._slots:
            connection: SMTPConnection | None = None
            mine: deque[int] = deque()
            announced = False  # the envelope of the email at hand went out on `connection`
            started_again: set[int] = set()
            try:
                while (index := mine.popleft() if mine else next(waiting, None)) is not None:
                    if deadline is not None and deadline - time.monotonic() < reserve:
                        if announced:  # its envelope went out: the session is dropped before its content
                            connection, announced = self._discard(connection), False
                        results[index] = LEASE_EXPIRED
                        continue
                    email, following, then = emails[index], None, b""
                    try:
                        if connection is None:
                            async with asyncio.timeout(time_left(deadline, self.timeout)):
                                connection = await self._checkout()
                        # Every wait for a reply of this email ends at its time limit.
                        connection.replies.deadline = loop.time() + time_left(deadline, self.timeout)
                        if connection.pipelining:
                            following, then = self._announce(connection, emails, mine, waiting, results)
                        reply = await connection.send(
                            email.envelope_from,
                            email.recipient,
                            email.message,
                            announced=announced,
                            then=then,
                        )
                        results[index] = Sent(reply[:500] or None)
                    except SMTPError as error:
                        results[index] = classify_smtp_error(error)
                        if error.stage == "connect" or not (connection and connection.is_open):
                            connection = self._discard(connection)
                    except TimeoutError as error:
                        results[index] = classify_smtp_error(error)
                        connection = self._discard(connection)
                    except (OSError, EOFError, ssl.SSLError) as error:
                        unsent = connection is not None and not connection.content_sent
                        connection = self._discard(connection)
                        if unsent and index not in started_again:
                            # None of its content reached the server (which had closed an idle session,
                            # say): once more, on a new connection.
                            started_again.add(index)
                            mine.appendleft(index)
                        else:
                            results[index] = classify_smtp_error(error)
                    except Exception as error:
                        # A fault of ours, not the server's: this email fails (transiently) and its session,
                        # in an unknown state, is dropped; the batch goes on, so that what was sent is
                        # recorded (an exception leaving the batch would have all of it sent again).
                        log.exception("unexpected error sending an email", delivery_id=email.delivery_id)
                        results[index] = classify_smtp_error(error)
                        connection = self._discard(connection)
                    # An envelope that went out on a session now closed had no content after it, so nothing
                    # was delivered: it is sent afresh.
                    announced = following is not None and connection is not None and connection.content_sent
            finally:
                if connection is not None:
                    self._idle.append(connection)

    @staticmethod
    def _announce(
        connection: SMTPConnection,
        emails: Sequence[OutgoingEmail],
        mine: deque[int],
        waiting: Iterator[int],
        results: list[SendResult | None],
    ) -> tuple[int | None, bytes]:
        """The email this connection sends next and its pipelined envelope. It is the first of `mine` when the
        connection already holds one (an email started again after a lost session), else the next waiting
        one, added to `mine`; waiting emails whose addresses the session cannot carry are failed on the way.
        The envelope announced is always that of the email sent next."""
        if mine:
            index = mine[0]
            try:
                mail, rcpt = connection.envelope(emails[index].envelope_from, emails[index].recipient)
            except SMTPError:
                return None, b""  # not announced: it fails on its own turn
            return index, mail + rcpt + b"DATA\r\n"
        for index in waiting:
            try:
                mail, rcpt = connection.envelope(emails[index].envelope_from, emails[index].recipient)
            except SMTPError as error:
                results[index] = classify_smtp_error(error)
                continue
            mine.append(index)
            return index, mail + rcpt + b"DATA\r\n"
        return None, b""

    @staticmethod
    def _discard(connection: SMTPConnection | None) -> None:
        if connection is not None:
            connection.close()

    async def send(self, email: OutgoingEmail) -> SendResult:
        [result] = await self.send_batch([email])
        return result

    async def _checkout(self) -> SMTPConnection:
        while self._idle:
            connection = self._idle.pop()
            if connection.is_open:
                return connection
            connection.close()
        return await SMTPConnection.open(self.url, self.local_hostname)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            try:
                async with asyncio.timeout(2):
                    await connection.quit()
            except (OSError, TimeoutError, SMTPError, EOFError):
                connection.close()
