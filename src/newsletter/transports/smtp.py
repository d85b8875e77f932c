from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

import aiosmtplib

from newsletter.config import EmailURL
from newsletter.transports.base import OutgoingEmail, SendResult, Sent, classify_smtp_error


class SMTPTransport:
    """Sends over a pool of reused SMTP connections, at most `pool_size` at a time."""

    def __init__(self, url: EmailURL, *, pool_size: int, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[aiosmtplib.SMTP] = []

    async def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendResult]:
        return list(await asyncio.gather(*(self.send(email) for email in emails)))

    async def send(self, email: OutgoingEmail) -> SendResult:
        async with self._slots:
            client: aiosmtplib.SMTP | None = None
            try:
                client = await self._checkout()
                _, reply = await client.sendmail(email.envelope_from, [email.recipient], email.message)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
                if client is not None:
                    if isinstance(error, aiosmtplib.SMTPResponseException) and client.is_connected:
                        # The server answered and aiosmtplib reset the envelope: the connection is still good.
                        self._idle.append(client)
                    else:
                        client.close()
                return classify_smtp_error(error)
            self._idle.append(client)
            return Sent(reply[:500] or None)

    async def _checkout(self) -> aiosmtplib.SMTP:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
        client = aiosmtplib.SMTP(
            hostname=self.url.host,
            port=self.url.port,
            timeout=self.timeout,
            use_tls=self.url.tls == "ssl",
            start_tls=self.url.tls == "starttls",
            tls_context=ssl.create_default_context() if self.url.tls != "none" else None,
        )
        await client.connect()
        if self.url.username:
            await client.login(self.url.username, self.url.password or "")
        return client

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await asyncio.wait_for(client.quit(), timeout=2)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()
