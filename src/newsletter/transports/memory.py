from __future__ import annotations

from collections.abc import Sequence

from newsletter.transports.base import LEASE_EXPIRED, OutgoingEmail, SendResult, Sent, expired


class MemoryTransport:
    """Keeps every email in a list; for unit tests that need no network."""

    def __init__(self) -> None:
        self.outbox: list[OutgoingEmail] = []

    async def send_batch(
        self, emails: Sequence[OutgoingEmail], deadline: float | None = None
    ) -> list[SendResult]:
        if expired(deadline):
            return [LEASE_EXPIRED] * len(emails)
        self.outbox.extend(emails)
        return [Sent(f"memory-{email.delivery_id}") for email in emails]

    async def close(self) -> None:
        return None
