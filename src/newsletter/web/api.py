"""The admin REST API (`/api/v1`): Bearer tokens, idempotent POSTs, problem+json errors."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from newsletter.db.queries import query
from newsletter.domain.subscriber import InvalidInput, ListSlug, SubscriberEmail, SubscriberName
from newsletter.services import audience, issues, privacy
from newsletter.services.errors import Conflict, Invalid, NotFound
from newsletter.services.tokens import Principal, authenticate
from newsletter.web.problems import PROBLEM_JSON

# Any printable ASCII, spaces included (draft-ietf-httpapi-idempotency-key-header), up to 255 characters.
_KEY = re.compile(r"[\x20-\x7e]{1,255}")
# Ids are PostgreSQL bigints: anything larger cannot name a row.
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
_bearer = HTTPBearer(auto_error=False, description="An API token from `newsletter tokens create`")


class ApiError(Exception):
    def __init__(
        self, status: int, title: str, detail: str | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers

    def response(self) -> Response:
        body: dict[str, Any] = {"type": "about:blank", "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        return Response(json.dumps(body), self.status, media_type=PROBLEM_JSON, headers=self.headers)


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


async def principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    found = await authenticate(_pool(request), credentials.credentials) if credentials else None
    if found is None:
        raise ApiError(
            401,
            "Unauthorized",
            "Send a valid API token as 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if request.method not in ("GET", "HEAD") and found.scope != "admin":
        raise ApiError(403, "Forbidden", "This token may only read.")
    return found


Auth = Annotated[Principal, Depends(principal)]
router = APIRouter(prefix="/api/v1", tags=["admin"])


def _encode(body: Any) -> bytes:
    """JSON as UTF-8, non-ASCII characters as they are: a stored response must hold an address as the erasure
    looks for it, not as `\\u00f6` escapes."""
    return json.dumps(jsonable_encoder(body), ensure_ascii=False).encode()


def _json(status: int, body: Any) -> Response:
    return Response(_encode(body), status, media_type="application/json")


async def _read(request: Request, action: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Response:
    try:
        async with _pool(request).acquire() as conn:
            return _json(200, await action(conn))
    except (NotFound, Invalid, Conflict) as error:
        return _service_error(error).response()


def _service_error(error: Exception) -> ApiError:
    if isinstance(error, NotFound):
        return ApiError(404, "Not found", str(error))
    if isinstance(error, Conflict):
        return ApiError(409, "Conflict", str(error))
    return ApiError(422, "Invalid request", str(error))


async def _write(
    request: Request,
    who: Principal,
    status: int,
    action: Callable[[asyncpg.Connection], Awaitable[Any]],
    *,
    content: bytes | None = None,
) -> Response:
    """Run a change in one transaction; with an Idempotency-Key, at most once, its response stored with it.

    A repeat of a finished request replays the stored response. A repeat that arrives while the first is
    still running waits for it (up to a few seconds) and then replays; past that it answers 409. The same key
    with another request answers 422. What makes two requests the same is their method, path, query and body;
    or, when the caller gives `content` (what it read of the request itself: a digest of an upload and the
    parameters as it understood them), their method, path and content.
    """
    key = request.headers.get("idempotency-key")
    if key is not None and not _KEY.fullmatch(key):
        return ApiError(
            400,
            "Bad request",
            "Idempotency-Key must be 1 to 255 printable ASCII characters (spaces allowed).",
        ).response()
    # The query string counts when there is one (the list of an import); without one, the fingerprint is as it
    # always was, so keys stored before keep matching.
    target = request.url.path + (f"?{request.url.query}" if request.url.query and content is None else "")
    fingerprint = hashlib.sha256(
        b"\n".join([request.method.encode(), target.encode(), content or await request.body()])
    ).digest()
    settings = request.app.state.settings
    try:
        async with _pool(request).acquire() as conn, conn.transaction():
            if key is not None:
                await conn.execute(
                    f"SET LOCAL lock_timeout = {int(settings.idempotency_wait_seconds * 1000)}"
                )
                await conn.execute(query("idempotency_expire"), who.token_id, key)
                try:
                    claimed = await conn.fetchval(query("idempotency_claim"), who.token_id, key, fingerprint)
                except asyncpg.LockNotAvailableError:
                    raise ApiError(
                        409, "Conflict", "A request with this Idempotency-Key is still running."
                    ) from None
                # Only the wait for the key is bounded; the request itself may wait on locks as usual.
                await conn.execute("SET LOCAL lock_timeout = DEFAULT")
                if not claimed:
                    saved = await conn.fetchrow(query("idempotency_saved"), who.token_id, key)
                    if saved["fingerprint"] != fingerprint:
                        raise ApiError(
                            422,
                            "Idempotency-Key reused",
                            "This Idempotency-Key was used for a different request.",
                        )
                    return Response(
                        saved["response_body"],
                        saved["response_status"],
                        media_type="application/json",
                        headers={"Idempotent-Replayed": "true"},
                    )
            result = await action(conn)
            body = _encode(result)
            if key is not None:
                await conn.execute(query("idempotency_store"), who.token_id, key, status, body)
            return Response(body, status, media_type="application/json")
    except ApiError as error:
        return error.response()
    except (NotFound, Invalid, Conflict) as error:
        return _service_error(error).response()


def _page(items: list[dict[str, Any]], limit: int, key: str = "id") -> dict[str, Any]:
    return {"items": items, "next_cursor": str(items[-1][key]) if len(items) == limit else None}


_CURSOR = re.compile(r"[0-9]{1,18}")


def _cursor(raw: str | None) -> int | None:
    """A cursor this API returned (an id in ASCII digits); anything else, `²` included, is refused."""
    if raw is None:
        return None
    if not _CURSOR.fullmatch(raw):
        raise ApiError(422, "Invalid request", "cursor: not a cursor this API returned")
    return int(raw)


def _text(value: str, field: str, *, max_length: int = 200) -> str:
    try:
        return SubscriberName.parse(value).value[:max_length]
    except InvalidInput as error:
        raise ApiError(422, "Invalid request", f"{field}: {error}") from None


# Lists


class ListIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slug: str = Field(max_length=63, examples=["weekly"])
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    optin: Literal["double", "single"] = "double"
    # Public: anyone may sign up with the form or POST /subscriptions. Private: people are added by the
    # operator only (API, admin, import).
    visibility: Literal["public", "private"] = "private"


class ListPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    optin: Literal["double", "single"] | None = None
    visibility: Literal["public", "private"] | None = None


@router.get("/lists", summary="All lists with their subscriber counts")
async def get_lists(request: Request, _: Auth) -> Response:
    return await _read(request, lambda conn: audience.all_lists(conn))


@router.post("/lists", status_code=201, summary="Create a list")
async def post_list(request: Request, who: Auth, body: ListIn) -> Response:
    try:
        slug = ListSlug.parse(body.slug).value
    except InvalidInput:
        return ApiError(422, "Invalid request", "slug: lowercase letters, digits and '-'").response()
    name = _text(body.name, "name")
    return await _write(
        request,
        who,
        201,
        lambda conn: audience.create_list(conn, slug, name, body.description, body.optin, body.visibility),
    )


@router.get("/lists/{list_id}", summary="One list")
async def get_list(request: Request, _: Auth, list_id: Id) -> Response:
    return await _read(request, lambda conn: audience.get_list(conn, list_id))


@router.patch("/lists/{list_id}", summary="Change a list")
async def patch_list(request: Request, who: Auth, list_id: Id, body: ListPatch) -> Response:
    name = _text(body.name, "name") if body.name is not None else None
    return await _write(
        request,
        who,
        200,
        lambda conn: audience.update_list(conn, list_id, name, body.description, body.optin, body.visibility),
    )


@router.delete("/lists/{list_id}", status_code=204, summary="Delete a list and its subscriptions")
async def delete_list(request: Request, who: Auth, list_id: Id) -> Response:
    response = await _write(request, who, 204, lambda conn: audience.delete_list(conn, list_id))
    return Response(status_code=204) if response.status_code == 204 else response


# Subscribers


def _small_attributes(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(json.dumps(value)) > 16_384:
        raise ValueError("attributes are limited to 16 KB of JSON")
    return value


Attributes = Annotated[dict[str, Any], AfterValidator(_small_attributes)]


class SubscriberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=320)
    name: str = Field(default="", max_length=256)
    lists: list[str] = Field(default_factory=lambda: ["default"], max_length=100)
    status: Literal["confirmed", "pending"] = "pending"
    attributes: Attributes = Field(default_factory=dict)


class SubscriberPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=256)
    status: Literal["active", "blocklisted"] | None = None
    attributes: Attributes | None = None


def _parse_person(
    email: str | None, name: str | None
) -> tuple[SubscriberEmail | None, SubscriberName | None]:
    try:
        return (
            SubscriberEmail.parse(email) if email is not None else None,
            SubscriberName.parse(name) if name is not None else None,
        )
    except InvalidInput as error:
        raise ApiError(422, "Invalid request", str(error)) from None


@router.get("/subscribers", summary="Subscribers, filtered, with keyset pagination")
async def get_subscribers(
    request: Request,
    _: Auth,
    list: str | None = None,
    status: Literal["active", "blocklisted", "pending", "confirmed", "unsubscribed"] | None = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    after = _cursor(cursor)
    return await _read(
        request,
        lambda conn: _paged(
            audience.subscriber_page(
                conn, after=after, list_slug=list, status=status, search=search, limit=limit
            ),
            limit,
        ),
    )


async def _paged(items: Awaitable[list[dict[str, Any]]], limit: int) -> dict[str, Any]:
    return _page(await items, limit)


@router.post("/subscribers", status_code=201, summary="Add a subscriber (as pending, or already confirmed)")
async def post_subscriber(request: Request, who: Auth, body: SubscriberIn) -> Response:
    email, name = _parse_person(body.email, body.name)
    assert email is not None and name is not None
    request_id = request.state.request_id
    return await _write(
        request,
        who,
        201,
        lambda conn: audience.create_subscriber(
            conn, email, name, body.attributes, body.lists, body.status, request_id
        ),
    )


@router.get("/subscribers/{subscriber_id}", summary="One subscriber with subscriptions and consent evidence")
async def get_subscriber(request: Request, _: Auth, subscriber_id: Id) -> Response:
    return await _read(request, lambda conn: audience.get_subscriber(conn, subscriber_id))


@router.patch("/subscribers/{subscriber_id}", summary="Change name, attributes or status")
async def patch_subscriber(request: Request, who: Auth, subscriber_id: Id, body: SubscriberPatch) -> Response:
    _, name = _parse_person(None, body.name)
    return await _write(
        request,
        who,
        200,
        lambda conn: audience.update_subscriber(conn, subscriber_id, name, body.attributes, body.status),
    )


@router.delete(
    "/subscribers/{subscriber_id}",
    status_code=204,
    summary="Erase a subscriber: every personal datum goes; past issues keep their counts",
)
async def delete_subscriber(request: Request, who: Auth, subscriber_id: Id) -> Response:
    response = await _write(request, who, 204, lambda conn: privacy.erase(conn, subscriber_id))
    return Response(status_code=204) if response.status_code == 204 else response


@router.get("/subscribers/{subscriber_id}/export", summary="Everything held about a subscriber")
async def export_subscriber(request: Request, _: Auth, subscriber_id: Id) -> Response:
    return await _read(request, lambda conn: privacy.export(conn, subscriber_id))


# Issues


class IssueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = Field(max_length=500)
    markdown: str | None = Field(default=None, max_length=1_000_000)
    html: str | None = Field(default=None, max_length=1_000_000)
    text: str | None = Field(default=None, max_length=1_000_000)
    lists: list[str] = Field(default_factory=lambda: ["default"], max_length=100)


class IssuePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str | None = Field(default=None, max_length=500)
    markdown: str | None = Field(default=None, max_length=1_000_000)
    html: str | None = Field(default=None, max_length=1_000_000)
    text: str | None = Field(default=None, max_length=1_000_000)
    lists: list[str] | None = Field(default=None, max_length=100)


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    send_at: datetime | None = None

    @field_validator("send_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("send_at needs a time zone, e.g. 2026-12-01T09:00:00Z")
        return value


class TestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    addresses: list[str] = Field(min_length=1, max_length=20)


def _content(subject: str, markdown: str | None, html: str | None, text: str | None) -> issues.IssueContent:
    try:
        return issues.IssueContent.parse(subject, markdown, html, text)
    except Invalid as error:
        raise ApiError(422, "Invalid request", str(error)) from None


@router.post("/issues", status_code=201, summary="Create a draft from Markdown, or from HTML and text")
async def post_issue(request: Request, who: Auth, body: IssueIn) -> Response:
    content = _content(body.subject, body.markdown, body.html, body.text)
    return await _write(request, who, 201, lambda conn: issues.create_issue(conn, content, body.lists))


@router.get("/issues", summary="Issues, newest first")
async def get_issues(
    request: Request,
    _: Auth,
    status: Literal["draft", "scheduled", "sending", "paused", "sent", "cancelled"] | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    before = _cursor(cursor)
    return await _read(
        request,
        lambda conn: _paged(issues.list_issues(conn, before=before, status=status, limit=limit), limit),
    )


@router.get("/issues/{issue_id}", summary="One issue with its delivery counts by status")
async def get_issue(request: Request, _: Auth, issue_id: Id) -> Response:
    return await _read(request, lambda conn: issues.get_issue(conn, issue_id))


@router.patch("/issues/{issue_id}", summary="Change a draft")
async def patch_issue(request: Request, who: Auth, issue_id: Id, body: IssuePatch) -> Response:
    content = None
    if body.subject is not None or body.markdown is not None or body.html is not None:
        if body.subject is None:
            return ApiError(422, "Invalid request", "subject: required when the content changes").response()
        content = _content(body.subject, body.markdown, body.html, body.text)
    return await _write(
        request, who, 200, lambda conn: issues.update_issue(conn, issue_id, content, body.lists)
    )


@router.post("/issues/{issue_id}/send", status_code=202, summary="Send now, or at send_at")
async def send_issue(request: Request, who: Auth, issue_id: Id, body: SendIn | None = None) -> Response:
    send_at = body.send_at if body else None
    request_id = request.state.request_id
    return await _write(
        request, who, 202, lambda conn: issues.send_issue(conn, issue_id, send_at, request_id)
    )


@router.post("/issues/{issue_id}/pause", status_code=202, summary="Stop sending until resumed")
async def pause_issue(request: Request, who: Auth, issue_id: Id) -> Response:
    return await _write(request, who, 202, lambda conn: issues.pause_issue(conn, issue_id))


@router.post("/issues/{issue_id}/resume", status_code=202, summary="Send the rest")
async def resume_issue(request: Request, who: Auth, issue_id: Id) -> Response:
    return await _write(request, who, 202, lambda conn: issues.resume_issue(conn, issue_id))


@router.post("/issues/{issue_id}/cancel", status_code=202, summary="Stop sending for good")
async def cancel_issue(request: Request, who: Auth, issue_id: Id) -> Response:
    return await _write(request, who, 202, lambda conn: issues.cancel_issue(conn, issue_id))


@router.post("/issues/{issue_id}/test", status_code=202, summary="Send test copies to the given addresses")
async def test_issue(request: Request, who: Auth, issue_id: Id, body: TestIn) -> Response:
    addresses = []
    for raw in body.addresses:
        email, _ = _parse_person(raw, None)
        assert email is not None
        addresses.append(email.value)
    request_id = request.state.request_id

    async def queue(conn: asyncpg.Connection) -> dict[str, int]:
        return {"queued": await issues.test_send(conn, issue_id, addresses, request_id)}

    return await _write(request, who, 202, queue)


@router.get("/issues/{issue_id}/deliveries", summary="The delivery ledger of an issue")
async def get_deliveries(
    request: Request,
    _: Auth,
    issue_id: Id,
    status: Literal["queued", "sending", "sent", "failed", "bounced", "complained", "suppressed", "cancelled"]
    | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    after = _cursor(cursor)
    return await _read(
        request,
        lambda conn: _paged(
            issues.deliveries(conn, issue_id, status=status, after=after, limit=limit), limit
        ),
    )


@router.post("/issues/{issue_id}/retry-failed", status_code=202, summary="Queue the failed deliveries again")
async def retry_failed(request: Request, who: Auth, issue_id: Id) -> Response:
    async def retry(conn: asyncpg.Connection) -> dict[str, int]:
        return {"retried": await issues.retry_failed(conn, issue_id)}

    return await _write(request, who, 202, retry)
