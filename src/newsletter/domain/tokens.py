"""Secret tokens sent to people: confirmation links (random, stored hashed), unsubscribe and preference links
(signed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass

TOKEN_BYTES = 32
# 32 bytes in unpadded base64url (both kinds of token).
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class Token:
    value: str

    @classmethod
    def generate(cls) -> Token:
        return cls(base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode())

    @classmethod
    def parse(cls, raw: str) -> Token | None:
        """A well-formed token, or None for anything that could not have come from `generate`."""
        return cls(raw) if _TOKEN_SHAPE.fullmatch(raw) else None

    @property
    def digest(self) -> bytes:
        # 256 random bits need no salt or slow hash: a hash only keeps a database leak from yielding links.
        return hashlib.sha256(self.value.encode()).digest()


def _signed(key: bytes, purpose: bytes, payload: bytes) -> str:
    """`payload` and its MAC for `purpose`, as 32 bytes in unpadded base64url (the MAC fills what the payload
    leaves: the purpose in the MAC keeps one kind of link from passing for another)."""
    mac = hmac.digest(key, purpose + payload, "sha256")[: TOKEN_BYTES - len(payload)]
    return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()


def _opened(key: bytes, purpose: bytes, token: str, payload_size: int) -> bytes | None:
    """The payload of a token `_signed` for `purpose`, or None for anything else."""
    if not _TOKEN_SHAPE.fullmatch(token):
        return None
    raw = base64.urlsafe_b64decode(token + "=")
    payload, mac = raw[:payload_size], raw[payload_size:]
    expected = hmac.digest(key, purpose + payload, "sha256")[: TOKEN_BYTES - payload_size]
    return payload if hmac.compare_digest(mac, expected) else None


@dataclass(frozen=True, slots=True)
class UnsubscribeToken:
    """Names a subscription (subscriber and list) in an unsubscribe link, signed so it cannot be forged.

    Signed rather than stored: every newsletter carries one, and the database keeps no secret that a leak
    would turn into working links. 128 bits of HMAC-SHA256.
    """

    subscriber_id: int
    list_id: int

    def sign(self, key: bytes) -> str:
        return _signed(key, b"unsubscribe:", struct.pack(">QQ", self.subscriber_id, self.list_id))

    @classmethod
    def verify(cls, key: bytes, token: str) -> UnsubscribeToken | None:
        payload = _opened(key, b"unsubscribe:", token, 16)
        return None if payload is None else cls(*struct.unpack(">QQ", payload))


@dataclass(frozen=True, slots=True)
class PreferencesToken:
    """Names a person in the "manage your subscription" link of every newsletter, signed as an unsubscribe
    link is (its own purpose in the MAC, so that neither kind of link passes for the other). 192 bits of
    HMAC-SHA256: the link opens the person's data, not only a way out."""

    subscriber_id: int

    def sign(self, key: bytes) -> str:
        return _signed(key, b"preferences:", struct.pack(">Q", self.subscriber_id))

    @classmethod
    def verify(cls, key: bytes, token: str) -> PreferencesToken | None:
        payload = _opened(key, b"preferences:", token, 8)
        return None if payload is None else cls(*struct.unpack(">Q", payload))
