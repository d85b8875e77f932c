"""Amazon SNS messages, authenticated as AWS documents it: an RSA signature over the message's canonical form,
by a certificate fetched over https from an SNS host only, for topics we subscribed to only."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from newsletter.inbound.providers import Rejected, Unavailable

# The whole URL, not a parsed host: a check and a fetch that parse a URL differently must not disagree about
# where it leads. SNS serves certificates and confirmations at https://sns.<region>.amazonaws.com/ only.
_SNS_URL = re.compile(r"https://sns\.[a-z0-9-]+\.amazonaws\.com/[A-Za-z0-9\-._~/?&=:%+]*")
# A signing certificate has one shape of path, and no query: anything else is not fetched at all, so a message
# cannot make us fetch arbitrary paths or fill the cache with one entry per query string.
_CERTIFICATE_URL = re.compile(
    r"https://sns\.[a-z0-9-]{3,}\.amazonaws\.com/SimpleNotificationService-[A-Za-z0-9]{1,64}\.pem"
)

# The fields each type of message is signed over, in this order (AWS: "Verifying the signatures of Amazon SNS
# messages"); a field absent from a message is left out.
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
OPTIONAL_FIELDS = frozenset({"Subject"})
SIGNATURE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


class FetchFailed(Exception):
    pass


class Fetcher(Protocol):
    async def get(self, url: str) -> bytes:
        """The body of a GET; raises FetchFailed for any network error or non-2xx answer."""
        ...


class HttpsFetcher:
    """Fetches over the network. A client per request: certificates are cached, so requests are rare."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    async def get(self, url: str) -> bytes:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.get(url)
                response.raise_for_status()
                return response.content
        except httpx.HTTPError as error:
            raise FetchFailed(f"GET {url}: {error}") from error


def is_sns_url(url: str) -> bool:
    return _SNS_URL.fullmatch(url) is not None


def is_certificate_url(url: str) -> bool:
    return _CERTIFICATE_URL.fullmatch(url) is not None


@dataclass(frozen=True, slots=True)
class SnsMessage:
    type: str
    topic_arn: str
    message: str
    subscribe_url: str
    signed: tuple[tuple[str, str], ...]
    signature: bytes
    signature_version: str
    signing_cert_url: str

    @classmethod
    def parse(cls, body: Any) -> SnsMessage:
        if not isinstance(body, dict):
            raise Rejected(400, "An SNS message is a JSON object.")
        message_type = body.get("Type")
        if not isinstance(message_type, str) or message_type not in SIGNED_FIELDS:
            raise Rejected(400, "Not an SNS message type this endpoint knows.")
        signed = []
        for name in SIGNED_FIELDS[message_type]:
            value = body.get(name)
            if value is None and name in OPTIONAL_FIELDS:
                continue
            if not isinstance(value, str):
                raise Rejected(400, f"The SNS message has no {name}.")
            signed.append((name, value))
        version, signature, certificate_url = (
            body.get(name) for name in ("SignatureVersion", "Signature", "SigningCertURL")
        )
        if not isinstance(signature, str) or not isinstance(certificate_url, str):
            raise Rejected(400, "The SNS message is not signed.")
        if not isinstance(version, str) or version not in SIGNATURE_HASHES:
            raise Rejected(400, "Unknown SNS SignatureVersion.")
        try:
            decoded = base64.b64decode(signature, validate=True)
        except binascii.Error:
            raise Rejected(400, "The SNS signature is not base64.") from None
        fields = dict(signed)
        return cls(
            type=message_type,
            topic_arn=fields["TopicArn"],
            message=fields["Message"],
            subscribe_url=fields.get("SubscribeURL", ""),
            signed=tuple(signed),
            signature=decoded,
            signature_version=version,
            signing_cert_url=certificate_url,
        )

    @property
    def canonical(self) -> bytes:
        return "".join(f"{name}\n{value}\n" for name, value in self.signed).encode()


class SnsVerifier:
    """Checks SNS messages; certificates are kept in memory by URL (AWS rotates them rarely)."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self._certificates: dict[str, x509.Certificate] = {}

    async def verify(self, body: Any, topics: frozenset[str]) -> SnsMessage:
        message = SnsMessage.parse(body)
        # Before any fetch: a stranger's message must not make us fetch anything.
        if message.topic_arn not in topics:
            raise Rejected(403, "Messages from this SNS topic are not accepted.")
        if not is_certificate_url(message.signing_cert_url):
            raise Rejected(403, "The signing certificate is not an Amazon SNS certificate URL.")
        certificate = await self._certificate(message.signing_cert_url)
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise Rejected(403, "The signing certificate does not hold an RSA key.")
        algorithm = SIGNATURE_HASHES[message.signature_version]()
        try:
            key.verify(message.signature, message.canonical, padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise Rejected(403, "The SNS signature does not match the message.") from None
        return message

    async def confirm(self, message: SnsMessage) -> None:
        """Subscribe to the topic that sent this (verified) SubscriptionConfirmation."""
        if not is_sns_url(message.subscribe_url):
            raise Rejected(403, "The SubscribeURL is not on an Amazon SNS host.")
        try:
            await self.fetcher.get(message.subscribe_url)
        except FetchFailed as error:
            raise Unavailable(str(error)) from error

    async def _certificate(self, url: str) -> x509.Certificate:
        certificate = self._certificates.get(url)
        if certificate is None:
            try:
                pem = await self.fetcher.get(url)
            except FetchFailed as error:
                raise Unavailable(str(error)) from error
            try:
                certificate = x509.load_pem_x509_certificate(pem)
            except ValueError:
                raise Rejected(403, "The signing certificate cannot be read.") from None
            self._certificates[url] = certificate
        now = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise Rejected(403, "The signing certificate has expired or is not valid yet.")
        return certificate
