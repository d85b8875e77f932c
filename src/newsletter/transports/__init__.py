"""Email transports behind one interface: SMTP, file, Postmark, and in-memory for tests."""

from __future__ import annotations

from newsletter.config import EmailURL, Settings
from newsletter.transports.base import Transport
from newsletter.transports.file import FileTransport
from newsletter.transports.memory import MemoryTransport
from newsletter.transports.smtp import SMTPTransport


def transport_from_settings(settings: Settings) -> Transport:
    url: EmailURL = settings.email
    if url.scheme == "smtp":
        return SMTPTransport(url, pool_size=settings.smtp_pool_size, timeout=settings.smtp_timeout_seconds)
    if url.scheme == "file":
        assert url.path is not None
        return FileTransport(url.path)
    if url.scheme == "memory":
        return MemoryTransport()
    from newsletter.transports.postmark import PostmarkTransport  # imports httpx only when used

    return PostmarkTransport(url)
