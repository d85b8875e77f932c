"""Postmark's batch API: our MIME messages turned into Postmark's JSON, up to 500 per request."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Sequence
from email import policy
from email.errors import MessageError
from email.parser import BytesParser
from typing import Any
from urllib.parse import urlsplit

import httpx

from newsletter.config import EmailURL
from newsletter.transports.base import (
    LEASE_EXPIRED,
    Failed,
    OutgoingEmail,
    SendResult,
    Sent,
    classify_http_status,
    classify_postmark_error_code,
    expired,
    time_left,
)

BATCH_LIMIT = 500  # messages per request, Postmark's limit
MAX_REQUEST_BYTES = 40_000_000  # Postmark refuses requests over 50 MB; MIME sizes only estimate the JSON's
BAD_TOKEN = 10  # Postmark's ErrorCode for a wrong or missing server token
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Postmark has fields of its own for these; the body's structure is rebuilt by Postmark.
OWN_FIELDS = frozenset(
    {"from", "to", "subject", "date", "mime-version", "content-type", "content-transfer-encoding"}
)
BODY_FIELDS = {"text/plain": "TextBody", "text/html": "HtmlBody"}


class PostmarkTransport:
    """Sends through Postmark's batch API over one reused connection pool."""

    def __init__(self, url: EmailURL, *, timeout: float = 30.0) -> None:
        # Plain http only for a local stand-in (tests); Postmark itself is https.
        scheme = "http" if urlsplit(f"//{url.host}").hostname in LOCAL_HOSTS else "https"
        self.endpoint = f"{scheme}://{url.host}/email/batch"
        self._headers = {
            "X-Postmark-Server-Token": url.password or "",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._client: httpx.AsyncClient | None = None

    async def send_batch(
        self, emails: Sequence[OutgoingEmail], deadline: float | None = None
    ) -> list[SendResult]:
        # Parsing hundreds of messages takes a while: off the event loop, which may be serving HTTP too.
        results, pending = await asyncio.to_thread(_convert_all, emails)
        for chunk in _requests(pending, [len(emails[index].message) for index, _ in pending]):
            if expired(deadline):
                answers: list[SendResult] = [LEASE_EXPIRED] * len(chunk)
            else:
                answers = await self._post([message for _, message in chunk], deadline)
            results.update((index, result) for (index, _), result in zip(chunk, answers, strict=True))
        return [results[index] for index in range(len(emails))]

    async def _post(self, messages: list[dict[str, Any]], deadline: float | None) -> list[SendResult]:
        try:
            # httpx limits each phase of the request; the deadline limits the whole of it.
            async with asyncio.timeout(None if deadline is None else time_left(deadline, math.inf)):
                response = await self._http().post(self.endpoint, json=messages)
        except (httpx.HTTPError, TimeoutError) as error:
            failure = Failed(error=f"{type(error).__name__}: {error}".strip(": "), permanent=False)
            return [failure] * len(messages)
        if not response.is_success:
            return [_batch_failure(response)] * len(messages)
        try:
            answers = response.json()
        except ValueError:
            answers = None
        if not isinstance(answers, list) or len(answers) != len(messages):
            # Nothing tells which emails went out; keeping them risks a duplicate, dropping them a loss.
            unexpected = Failed(
                error=f"unexpected answer from Postmark: {response.text[:300]}", permanent=False
            )
            return [unexpected] * len(messages)
        return [_result_of(answer) for answer in answers]

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(headers=self._headers, timeout=self._timeout)
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _convert_all(
    emails: Sequence[OutgoingEmail],
) -> tuple[dict[int, SendResult], list[tuple[int, dict[str, Any]]]]:
    """Postmark messages by position; an email that cannot be converted fails on its own, for good."""
    failures: dict[int, SendResult] = {}
    converted: list[tuple[int, dict[str, Any]]] = []
    for index, outgoing in enumerate(emails):
        try:
            converted.append((index, to_postmark(outgoing)))
        except (ValueError, LookupError, MessageError) as error:
            failures[index] = Failed(error=f"cannot convert for Postmark: {error}", permanent=True)
    return failures, converted


def _requests(
    pending: list[tuple[int, dict[str, Any]]], sizes: list[int]
) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    """Consecutive runs of at most BATCH_LIMIT messages and (but for a lone huge one) MAX_REQUEST_BYTES."""
    chunk: list[tuple[int, dict[str, Any]]] = []
    total = 0
    for item, size in zip(pending, sizes, strict=True):
        if chunk and (len(chunk) == BATCH_LIMIT or total + size > MAX_REQUEST_BYTES):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += size
    if chunk:
        yield chunk


def to_postmark(outgoing: OutgoingEmail) -> dict[str, Any]:
    """One Postmark message from a complete MIME message; every other header travels in `Headers`."""
    # compat32 parses several times faster than policy.default (500 messages per request add up); each header
    # is then decoded by policy.default's header classes (RFC 2047 words, address quoting), as message[name]
    # would be.
    message = BytesParser(policy=policy.compat32).parsebytes(outgoing.message)
    headers = [(name, policy.default.header_fetch_parse(name, str(value))) for name, value in message.items()]
    own = {name.lower(): str(value) for name, value in headers if name.lower() in OWN_FIELDS}
    if "from" not in own:
        raise ValueError("the message has no From header")
    result: dict[str, Any] = {
        "From": own["from"],
        "To": own.get("to") or outgoing.recipient,
        "Subject": own.get("subject", ""),
        "Headers": [
            {"Name": name, "Value": str(value)} for name, value in headers if name.lower() not in OWN_FIELDS
        ],
        # Bulk email carries List-Unsubscribe; transactional email (confirmations) goes out on its own stream.
        "MessageStream": "broadcast" if "List-Unsubscribe" in message else "outbound",
    }
    for part in message.walk():
        field = BODY_FIELDS.get(part.get_content_type())
        if field is None or field in result or part.get_content_disposition() == "attachment":
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            text = payload.decode(part.get_content_charset() or "utf-8", errors="replace")
            result[field] = text.replace("\r\n", "\n")  # line ends as in JSON, not as on the wire
    return result


def _result_of(answer: object) -> SendResult:
    if isinstance(answer, dict):
        code = answer.get("ErrorCode")
        if code == 0:
            return Sent(str(answer.get("MessageID") or "") or None)
        if isinstance(code, int):
            return classify_postmark_error_code(code, str(answer.get("Message", "")))
    return Failed(error=f"unexpected answer from Postmark: {str(answer)[:300]}", permanent=False)


def _batch_failure(response: httpx.Response) -> Failed:
    """The whole request was refused: there is no single address to suppress."""
    status = response.status_code
    code: int | None = None
    detail = response.text[:300]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("ErrorCode"), int):
        code, detail = body["ErrorCode"], str(body.get("Message", ""))
    if status == 401:
        # A wrong or revoked token is our configuration, not these emails: keep them until it is fixed.
        code = BAD_TOKEN
    if code is not None and 400 <= status < 500 and status != 429:
        failure = classify_postmark_error_code(code, detail)
        return Failed(error=f"HTTP {status}: {failure.error}"[:1000], permanent=failure.permanent)
    return classify_http_status(status, detail, response.headers.get("Retry-After"))
