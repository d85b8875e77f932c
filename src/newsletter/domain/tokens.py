"""Secret tokens sent to people (confirmation links); only their SHA-256 hash is ever stored."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

TOKEN_BYTES = 32
# 32 bytes in unpadded base64url.
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class Token:
    value: str

    @classmethod
    def generate(cls) -> Token:
        return cls(base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode())

    @classmethod
    def parse(cls, raw: str) -> Token | None:
        """A well-formed token, or None for anything that could not have come from `generate`."""
        return cls(raw) if _TOKEN_SHAPE.match(raw) else None

    @property
    def digest(self) -> bytes:
        # 256 random bits need no salt or slow hash: a hash only keeps a database leak from yielding links.
        return hashlib.sha256(self.value.encode()).digest()
