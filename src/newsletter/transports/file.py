from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from newsletter.transports.base import LEASE_EXPIRED, Failed, OutgoingEmail, SendResult, Sent, expired


class FileTransport:
    """Writes one `.eml` file per email into a directory: the outbox of a local install."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send_batch(
        self, emails: Sequence[OutgoingEmail], deadline: float | None = None
    ) -> list[SendResult]:
        return await asyncio.to_thread(self._write_all, emails, deadline)

    def _write_all(self, emails: Sequence[OutgoingEmail], deadline: float | None) -> list[SendResult]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return [Failed(error=f"cannot create the outbox: {error}", permanent=False) for _ in emails]
        return [LEASE_EXPIRED if expired(deadline) else self._write(email) for email in emails]

    def _write(self, email: OutgoingEmail) -> SendResult:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{email.delivery_id}.eml"
        partial = self.directory / f".{name}.partial"
        try:
            # Written aside and renamed, so a reader never sees half a message.
            partial.write_bytes(email.message)
            os.replace(partial, self.directory / name)
        except OSError as error:
            return Failed(error=f"cannot write {name}: {error}", permanent=False)
        return Sent(name)

    async def close(self) -> None:
        return None
