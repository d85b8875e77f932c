"""What every route of the admin API shares: the token, ids and cursors, parsing of people's fields, problem
responses, and the two ways a route runs a service: `read` (a GET) and `write` (a change, idempotent with a
key).

Handlers parse, call one service, and render: a service error (NotFound, Invalid, Conflict) or an ApiError
raised anywhere becomes its problem+json answer through the application's exception handlers
(`install_error_handlers`), and a change that fails leaves nothing behind (its unit of work rolls back).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from newsletter.db.database import Database
from newsletter.domain.subscriber import InvalidInput, SubscriberEmail, SubscriberName
from newsletter.domain.vocabulary import TokenScope
from newsletter.services.access.tokens import Principal, authenticate
from newsletter.services.audience.segments import InvalidSegment
from newsletter.services.errors import Conflict, Invalid, NotFound
from newsletter.web.api import idempotency
from newsletter.web.problems import PROBLEM_JSON
from newsletter.web.state import context

# Ids are PostgreSQL bigints: anything larger cannot name a row.
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
PREFIX = "/api/v1"
_CURSOR = re.compile(r"[0-9]{1,18}")
_bearer = HTTPBearer(auto_error=False, description="An API token from `newsletter tokens create`")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
        extensions: dict[str, Any] | None = None,
    ):
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extensions = extensions or {}

    def response(self) -> Response:
        body: dict[str, Any] = {"type": "about:blank", "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extensions)
        return Response(json.dumps(body), self.status, media_type=PROBLEM_JSON, headers=self.headers)


def invalid(detail: str) -> ApiError:
    return ApiError(422, "Invalid request", detail)


def service_error(error: NotFound | Invalid | Conflict) -> ApiError:
    if isinstance(error, NotFound):
        return ApiError(404, "Not found", str(error))
    if isinstance(error, Conflict):
        return ApiError(409, "Conflict", str(error))
    if isinstance(error, InvalidSegment):
        # Where the mistake is, for a client to point at (RFC 9457 extension member).
        return ApiError(422, "Invalid request", str(error), extensions={"position": error.position})
    return invalid(str(error))


async def principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    found = await authenticate(context(request).db, credentials.credentials) if credentials else None
    if found is None:
        raise ApiError(
            401,
            "Unauthorized",
            "Send a valid API token as 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if request.method not in ("GET", "HEAD") and found.scope != TokenScope.ADMIN:
        raise ApiError(403, "Forbidden", "This token may only read.")
    return found


Auth = Annotated[Principal, Depends(principal)]


def encode(body: Any) -> bytes:
    """JSON as UTF-8, non-ASCII characters as they are: a stored response must hold an address as the erasure
    looks for it, not as `\\u00f6` escapes."""
    return json.dumps(jsonable_encoder(body), ensure_ascii=False).encode()


async def read(request: Request, query: Callable[[Database], Awaitable[Any]]) -> Response:
    return Response(encode(await query(context(request).db)), 200, media_type="application/json")


@dataclass(frozen=True, slots=True)
class PageRequest:
    cursor: str | None
    limit: int


def paging(
    cursor: Annotated[str | None, Query(description="The `next_cursor` of the page before.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PageRequest:
    return PageRequest(cursor, limit)


Paging = Annotated[PageRequest, Depends(paging)]


async def read_page(
    request: Request,
    wanted: PageRequest,
    query: Callable[[Database, int | None], Awaitable[list[dict[str, Any]]]],
) -> Response:
    """A keyset page: `query` gets the key after which it starts (from the cursor); the next page's cursor is
    the key of the last item, when the page is full."""
    items = await query(context(request).db, parse_cursor(wanted.cursor))
    body = {"items": items, "next_cursor": str(items[-1]["id"]) if len(items) == wanted.limit else None}
    return Response(encode(body), 200, media_type="application/json")


async def write(
    request: Request,
    who: Principal,
    status: int,
    change: Callable[[Database], Awaitable[Any]],
    *,
    content: bytes | None = None,
) -> Response:
    """Run a change in one unit of work; with an Idempotency-Key, at most once, its response saved with it.

    What makes two requests the same is their method, path, query and body; or, when the caller gives
    `content` (what it read of the request itself: a digest of an upload and the parameters as it understood
    them), their method, path and content.
    """
    raw_key = request.headers.get("idempotency-key")
    claim = None
    if raw_key is not None:
        try:
            key = idempotency.parse_key(raw_key)
        except idempotency.MalformedKey as error:
            raise ApiError(400, "Bad request", str(error)) from None
        # The query string counts when there is one and the content is the body; without one, the target is
        # the path alone, as it always was, so keys stored before keep matching.
        query = f"?{request.url.query}" if request.url.query and content is None else ""
        claim = idempotency.Claim(
            who.token_id,
            key,
            idempotency.fingerprint(
                request.method, request.url.path + query, content or await request.body()
            ),
        )
    wait = context(request).settings.idempotency_wait_seconds
    db = context(request).db
    try:
        async with db.transaction() as conn:
            if claim is not None:
                step = await idempotency.begin(conn, claim, wait_seconds=wait)
                if isinstance(step, idempotency.Replay):
                    return _answer(step.status, step.body, replayed=True)
            result = await change(db)
            body = b"" if status == 204 else encode(result)
            if claim is not None:
                await idempotency.save(conn, claim, status, body)
    except idempotency.StillRunning:
        raise ApiError(409, "Conflict", "A request with this Idempotency-Key is still running.") from None
    except idempotency.KeyReused:
        raise ApiError(
            422, "Idempotency-Key reused", "This Idempotency-Key was used for a different request."
        ) from None
    return _answer(status, body)


def _answer(status: int, body: bytes, *, replayed: bool = False) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    if status == 204:
        return Response(status_code=204, headers=headers)
    return Response(body, status, media_type="application/json", headers=headers)


def parse_cursor(raw: str | None) -> int | None:
    """A cursor this API returned (an id in ASCII digits); anything else, `²` included, is refused."""
    if raw is None:
        return None
    if not _CURSOR.fullmatch(raw):
        raise invalid("cursor: not a cursor this API returned")
    return int(raw)


def text(value: str, field: str, *, max_length: int = 200) -> str:
    """A one-line text a person typed (a name, a detail): no control characters, cut to `max_length`."""
    try:
        return SubscriberName.parse(value).value[:max_length]
    except InvalidInput as error:
        raise invalid(f"{field}: {error}") from None


def email(value: str) -> SubscriberEmail:
    try:
        return SubscriberEmail.parse(value)
    except InvalidInput as error:
        raise invalid(str(error)) from None


def name(value: str) -> SubscriberName:
    try:
        return SubscriberName.parse(value)
    except InvalidInput as error:
        raise invalid(str(error)) from None
