"""Cross-origin sign-ups (CORS) for the public sign-up endpoint alone, from NEWSLETTER_ALLOWED_ORIGINS.

Starlette's CORSMiddleware answers for every path of the application, and the admin pages and /api/v1 must
never answer a cross-origin request: so this small middleware looks at the sign-up path only and passes every
other request through untouched, whatever its Origin. On the sign-up path:

- a request without Origin, or from the service's own origin, is not cross-origin: untouched;
- a pre-flight (OPTIONS with Access-Control-Request-Method) from an allowed origin, for POST with at most a
  Content-Type header, is answered 204 with that origin echoed (never `*`), and without
  Access-Control-Allow-Credentials: a sign-up needs no cookie, and the browser sends none;
- a pre-flight from any other origin, or for another method or other headers, is refused with 403 and a
  problem+json body that says why; the browser then does not send the request;
- an allowed origin's request is answered with its origin echoed, so that its page may read the answer;
- from any other origin, what a page may send without a pre-flight (an HTML form: urlencoded, multipart or
  text/plain) goes through with no CORS header (the embedded form works without JavaScript, and its answer
  is a page of ours that the other site cannot read), and anything else (JSON) is refused with 403 before the
  application sees it: a browser would have been stopped at the pre-flight, so only another client gets here.

And the proof-of-work challenge (GET /subscriptions/challenge), which the embedded form's script fetches
before it signs up: an allowed origin's request is answered with its origin echoed; any other is answered
without a CORS header, so its page cannot read the challenge.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.config import parse_origin
from newsletter.web.problems import problem

# The paths that take cross-origin sign-ups: POST /subscriptions, which the JSON API and the embedded form
# both post to.
SIGNUP_PATHS = frozenset({"/subscriptions"})
# The proof-of-work challenge the embedded form's script fetches before it signs up (a simple GET: no
# pre-flight); an allowed origin may read the answer, any other gets it without CORS headers, unreadable.
CHALLENGE_PATH = "/subscriptions/challenge"
ALLOWED_METHOD = "POST"
ALLOWED_HEADERS = frozenset({"content-type"})
PREFLIGHT_MAX_AGE_SECONDS = 600
# What a page may send cross-origin without a pre-flight (the CORS-safelisted content types of a form).
_SIMPLE_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


class SignupCorsMiddleware:
    def __init__(self, app: ASGIApp, *, allowed_origins: Iterable[str], base_url: str) -> None:
        self.app = app
        self.allowed_origins = frozenset(allowed_origins)
        parts = urlsplit(base_url)
        self.own_origin = parse_origin(f"{parts.scheme}://{parts.netloc}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in (*SIGNUP_PATHS, CHALLENGE_PATH):
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
        }
        origin = headers.get("origin")
        if scope["path"] == CHALLENGE_PATH:
            allowed_reader = (
                origin is not None and origin in self.allowed_origins and scope["method"] == "GET"
            )
            await self.app(scope, receive, _with_origin(send, origin) if allowed_reader and origin else send)
            return
        if origin is None or self._same_origin(origin, headers.get("host")):
            await self.app(scope, receive, send)
            return
        allowed = origin in self.allowed_origins
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(origin, allowed, headers)(scope, receive, send)
            return
        if allowed:
            await self.app(scope, receive, _with_origin(send, origin))
            return
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in _SIMPLE_CONTENT_TYPES:
            await self.app(scope, receive, send)
            return
        await _refused(origin)(scope, receive, send)

    def _same_origin(self, origin: str, host: str | None) -> bool:
        """The service's own pages: its public URL, or the host the request was sent to (its scheme is not
        compared: behind a proxy that ends TLS, the request arrives over http)."""
        return origin == self.own_origin or (host is not None and urlsplit(origin).netloc == host)

    def _preflight(self, origin: str, allowed: bool, headers: dict[str, str]) -> ASGIApp:
        if not allowed:
            return _refused(origin)
        method = headers["access-control-request-method"].strip()
        requested = {
            name.strip().lower()
            for name in headers.get("access-control-request-headers", "").split(",")
            if name.strip()
        }
        if method != ALLOWED_METHOD or not requested <= ALLOWED_HEADERS:
            return problem(
                403,
                "Cross-origin request refused",
                f"A cross-origin sign-up is a {ALLOWED_METHOD} with at most a Content-Type header.",
            )
        return Response(
            status_code=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ALLOWED_METHOD,
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
                "Vary": "Origin",
            },
        )


def _refused(origin: str) -> ASGIApp:
    return problem(
        403,
        "Cross-origin request refused",
        f"Sign-ups from pages at {origin} are not accepted: the origin is not in NEWSLETTER_ALLOWED_ORIGINS.",
    )


def _with_origin(send: Send, origin: str) -> Send:
    async def send_with_origin(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                *message.get("headers", []),
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"vary", b"Origin"),
            ]
        await send(message)

    return send_with_origin
