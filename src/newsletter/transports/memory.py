from __future__ import annotations

from collections.abc import Sequence

from newsletter.transports.base import OutgoingEmail, SendResult, Sent


class MemoryTransport:
    """Keeps every email in a list; for unit tests that need no network."""

    def __init__(self) -> None:
        self.outbox: list[OutgoingEmail] = []

    async def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendResult]:
        self.outbox.extend(emails)
        return [Sent(f"memory-{email.delivery_id}") for email in emails]

    async def close(self) -> None:
        return None
