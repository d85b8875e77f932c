"""Webhook endpoints as values: the URL an integrator gives, the addresses a request may go to, the secret,
and the signed request itself (the Standard Webhooks specification, https://www.standardwebhooks.com)."""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

from newsletter.domain.subscriber import InvalidInput

MAX_URL_LENGTH = 2000
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not a secret
SECRET_BYTES = 24
# The NAT64 prefix (RFC 6052): its addresses carry an IPv4 address in their last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class WebhookUrl:
    """An http(s) URL without credentials or fragment; its host is kept apart to be resolved and checked."""

    value: str
    host: str
    port: int

    @classmethod
    def parse(cls, raw: str) -> WebhookUrl:
        candidate = raw.strip()
        if not candidate:
            raise InvalidInput("url: give the endpoint's URL")
        if len(candidate) > MAX_URL_LENGTH:
            raise InvalidInput(f"url: at most {MAX_URL_LENGTH} characters")
        if not candidate.isascii() or any(char.isspace() or ord(char) < 32 for char in candidate):
            raise InvalidInput("url: spaces, control and non-ASCII characters must be percent-encoded")
        try:
            parts = urlsplit(candidate)
            port = parts.port
        except ValueError as error:
            raise InvalidInput(f"url: not a URL ({error})") from None
        if parts.scheme not in ("http", "https"):
            raise InvalidInput("url: only http:// and https:// URLs can receive webhooks")
        if parts.username is not None or parts.password is not None:
            raise InvalidInput("url: credentials in the URL are not accepted; the signature authenticates us")
        if not parts.hostname:
            raise InvalidInput("url: the URL has no host")
        if parts.fragment:
            raise InvalidInput("url: a fragment (#...) is never sent; leave it out")
        default_port = 443 if parts.scheme == "https" else 80
        return cls(candidate, parts.hostname, port or default_port)

    @property
    def literal_address(self) -> IPAddress | None:
        """The host, when it is an IP address rather than a name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def refused_address(address: IPAddress) -> str | None:
    """Why a request may not go to this address (loopback, private, link-local...), or None when it is
    public. An IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4, Teredo) is judged by it."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded: IPAddress | None = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None:
            return refused_address(embedded)
    for kind, matches in (
        ("a loopback", address.is_loopback),
        ("an unspecified", address.is_unspecified),
        ("a link-local", address.is_link_local),
        ("a multicast", address.is_multicast),
        ("a private", address.is_private),
        ("a reserved", address.is_reserved),
    ):
        if matches:
            return f"{address} is {kind} address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def message_id(event_id: int) -> str:
    """The `webhook-id`: the same for every attempt and replay of an event, so receivers can skip repeats."""
    return f"evt_{event_id}"


def payload(event_id: int, event_type: str, created_at: datetime, data: Any) -> bytes:
    """The body: the event as the events API shows it, with its time as `timestamp` (the specification's
    `type`, `timestamp`, `data`)."""
    body = {"id": event_id, "type": event_type, "timestamp": created_at.isoformat(), "data": data}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class Signer:
    """Signs request bodies with one endpoint's secret."""

    __slots__ = ("_webhook",)

    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)

    def headers(self, msg_id: str, sent_at: datetime, body: bytes) -> dict[str, str]:
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self._webhook.sign(msg_id, sent_at, body),
        }
