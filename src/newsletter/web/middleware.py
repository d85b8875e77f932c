"""Pure ASGI middleware: request ids, one log event per request, metrics, body limits, security headers."""

from __future__ import annotations

import functools
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter import telemetry

log = structlog.get_logger("newsletter.http")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Pages hold no script and load nothing from elsewhere (the admin pages and the API docs set their own).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# Path parameters holding a secret (a token) or a person's address: such a path is logged as its route.
_REDACTED_PARAMETERS = ("{token}", "{email}")
# A client streaming an oversized body (no Content-Length) only sees our 413 if we read what it sends; past
# this much we stop reading and let the connection drop.
_DRAIN_LIMIT = 16 * 1024 * 1024


class BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, large_bodies: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # The few paths that take large uploads (CSV imports), with their own limits.
        self.large_bodies = dict(large_bodies or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        supplied = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = supplied if _REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        response_started = False
        path: str = scope["path"]
        max_body_bytes = self.large_bodies.get(path, self.max_body_bytes)

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                extra = [
                    (b"x-request-id", request_id.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                # A response that sets its own policy (the admin pages, the framed issue preview) keeps it.
                own_policy = any(
                    name.lower() == b"content-security-policy" for name, _ in message.get("headers", [])
                )
                if not own_policy:
                    extra += [
                        (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                        (b"x-frame-options", b"DENY"),
                    ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        body_state = {"done": False}
        try:
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
                body_state["declared_too_large"] = True
                raise BodyTooLarge
            await self.app(scope, self._limited(receive, body_state, max_body_bytes), send_with_headers)
        except BodyTooLarge:
            if response_started:
                raise
            if not body_state["done"] and not body_state.get("declared_too_large"):
                await _drain(receive)
            await self._too_large(send_with_headers)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_of(scope)
            requests, latency = _metrics(scope["method"], route, status)
            requests.inc()
            latency.observe(elapsed)
            log.info(
                "request",
                method=scope["method"],
                path=_loggable(path, route),
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")

    def _limited(self, receive: Receive, state: dict[str, bool], max_body_bytes: int) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                state["done"] = not message.get("more_body", False)
                if received > max_body_bytes:
                    raise BodyTooLarge
            return message

        return limited_receive

    async def _too_large(self, send: Send) -> None:
        body = (
            b'{"type":"about:blank","title":"Request body too large","status":413,'
            b'"detail":"The request body is larger than this server accepts."}'
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive) -> None:
    drained = 0
    while drained < _DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


@functools.cache
def _metrics(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The labelled metrics of a kind of request, looked up once (routes are few, not one per URL)."""
    return (
        telemetry.HTTP_REQUESTS.labels(method, route, str(status)),
        telemetry.HTTP_LATENCY.labels(method, route),
    )


def _loggable(path: str, route: str) -> str:
    """The path as it may be logged. An unsubscribe link's path is its secret token, a suppression's holds an
    address (erasure cannot reach log lines): such paths, and any other holding an @, are logged as their
    route."""
    if any(name in route for name in _REDACTED_PARAMETERS) or "@" in unquote(path):
        return route
    return path


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
