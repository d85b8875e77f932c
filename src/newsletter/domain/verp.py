"""VERP return paths: each delivery's own envelope sender, `bounces+<id>-<mac>@domain`.

A bounce goes to the envelope sender. Giving every delivery its own makes each bounce name the delivery it is
about, whatever the reporting server writes in its report; the MAC (keyed by the secret key) keeps anyone from
forging bounces that name deliveries.
"""

from __future__ import annotations

import hmac
import re

VERP_LOCAL_PART = "bounces"
_VERP = re.compile(r"(?<![\w.+-])bounces\+([0-9]{1,18})-([0-9a-f]{16})@", re.IGNORECASE)


def _mac(delivery_id: int, secret_key: bytes) -> str:
    return hmac.digest(secret_key, f"verp:{delivery_id}".encode(), "sha256")[:8].hex()


def verp_address(delivery_id: int, sender_domain: str, *, secret_key: bytes) -> str:
    """The envelope sender of one delivery; its bounces come back to it."""
    return f"{VERP_LOCAL_PART}+{delivery_id}-{_mac(delivery_id, secret_key)}@{sender_domain}"


def parse_verp(address: str, *, secret_key: bytes) -> int | None:
    """The delivery a VERP address (bare, in angle brackets or with a name) was made for, if it is genuine."""
    match = _VERP.search(address)
    if match is None:
        return None
    delivery_id = int(match[1])
    return delivery_id if hmac.compare_digest(match[2].lower(), _mac(delivery_id, secret_key)) else None
