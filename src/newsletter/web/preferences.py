"""The preference page, `/preferences/{token}`: what the "manage your subscription" link of every newsletter
opens (SPEC section 13). The signed token in the path is the only credential: no cookie, no session, so every
form carries it in its action; every POST is idempotent and answers with a redirect back to the page, which
says what was done."""

from __future__ import annotations

import contextlib
import json
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from newsletter.domain.tokens import PreferencesToken
from newsletter.services.compliance import preferences
from newsletter.services.errors import Conflict, Invalid, NotFound
from newsletter.web.public import BadRequest, FieldErrors, _evidence, page, read_fields
from newsletter.web.state import context

router = APIRouter(tags=["preferences"])
TokenPath = Annotated[str, Path(max_length=100)]
# The token is in the address: it must not stay in a cache (nor travel in a Referer: every page is sent with
# `Referrer-Policy: no-referrer`, web/middleware.py).
PRIVATE = {"Cache-Control": "no-store"}
DONE = {
    "joined": "You are subscribed to that list.",
    "already": "You were already subscribed to that list.",
    "renamed": "Your name is saved.",
    "left": "You are unsubscribed from every list. We will not email you again unless you join a list here.",
}


def _person(request: Request, token: str) -> int | None:
    verified = PreferencesToken.verify(context(request).settings.resolved_secret_key().encode(), token)
    return verified.subscriber_id if verified else None


def _back(token: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"/preferences/{token}?done={done}", status_code=303, headers=PRIVATE)


async def _page(
    request: Request, token: str, *, status: int = 200, done: str = "", error: str = ""
) -> Response:
    subscriber_id = _person(request, token)
    if subscriber_id is None:
        return page("not_found", 404)
    try:
        found = await preferences.page(context(request).db, subscriber_id)
    except NotFound:
        return page("not_found", 404)
    return page(
        "preferences", status, PRIVATE, token=token, person=found, done=DONE.get(done, ""), error=error
    )


@router.get("/preferences/{token}", response_class=HTMLResponse, summary="A person's preference page")
async def preferences_page(request: Request, token: TokenPath, done: str = "") -> Response:
    return await _page(request, token, done=done)


async def _field(request: Request, name: str) -> str | None:
    try:
        return (await read_fields(request, (name,))).get(name, "")
    except (BadRequest, FieldErrors):
        return None


@router.post("/preferences/{token}/join", response_class=HTMLResponse, summary="Join a public list")
async def join(request: Request, token: TokenPath) -> Response:
    subscriber_id = _person(request, token)
    raw = await _field(request, "list")
    if subscriber_id is None:
        return page("not_found", 404)
    if raw is None or not raw.isdecimal() or len(raw) > 18:
        return await _page(request, token, status=422, error="Choose one of the lists below.")
    try:
        joined = await preferences.join(
            context(request).db, subscriber_id, int(raw), _evidence(request, "preferences")
        )
    except NotFound:
        return await _page(request, token, status=422, error="Choose one of the lists below.")
    except Conflict:
        return await _page(request, token, status=409, error="This address cannot join a list here.")
    return _back(token, "joined" if joined else "already")


@router.post("/preferences/{token}/name", response_class=HTMLResponse, summary="Change one's name")
async def rename(request: Request, token: TokenPath) -> Response:
    subscriber_id = _person(request, token)
    name = await _field(request, "name")
    if subscriber_id is None:
        return page("not_found", 404)
    try:
        await preferences.rename(context(request).db, subscriber_id, name or "")
    except Invalid as error:
        return await _page(request, token, status=422, error=str(error).removeprefix("name: ").capitalize())
    return _back(token, "renamed")


@router.post("/preferences/{token}/leave", response_class=HTMLResponse, summary="Leave every list")
async def leave(request: Request, token: TokenPath) -> Response:
    subscriber_id = _person(request, token)
    if subscriber_id is None:
        return page("not_found", 404)
    try:
        await preferences.leave_everything(context(request).db, subscriber_id)
    except NotFound:
        return page("not_found", 404)
    return _back(token, "left")


@router.get("/preferences/{token}/data", summary="Everything held about the person, as JSON")
async def data(request: Request, token: TokenPath) -> Response:
    subscriber_id = _person(request, token)
    if subscriber_id is None:
        return page("not_found", 404)
    try:
        document = await preferences.data(context(request).db, subscriber_id)
    except NotFound:
        return page("not_found", 404)
    return Response(
        json.dumps(document, ensure_ascii=False, indent=2, default=str),
        media_type="application/json",
        headers={**PRIVATE, "Content-Disposition": 'attachment; filename="my-data.json"'},
    )


@router.post("/preferences/{token}/delete", response_class=HTMLResponse, summary="Ask to delete one's data")
async def delete(request: Request, token: TokenPath) -> Response:
    """The confirmation step: nothing is deleted until the next form is sent."""
    subscriber_id = _person(request, token)
    if subscriber_id is None:
        return page("not_found", 404)
    try:
        found = await preferences.page(context(request).db, subscriber_id)
    except NotFound:
        return page("not_found", 404)
    return page("preferences_delete", 200, PRIVATE, token=token, person=found)


@router.post(
    "/preferences/{token}/delete/confirm", response_class=HTMLResponse, summary="Delete one's data, for good"
)
async def delete_confirmed(request: Request, token: TokenPath) -> Response:
    subscriber_id = _person(request, token)
    if subscriber_id is None:
        return page("not_found", 404)
    # A second click finds nobody: it is done either way.
    with contextlib.suppress(NotFound):
        await preferences.erase(context(request).db, subscriber_id)
    return page("preferences_deleted", 200, PRIVATE)
