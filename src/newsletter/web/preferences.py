"""The preference page, `/preferences/{token}`: what the "manage your subscription" link of every newsletter
opens (SPEC section 13). The signed token in the path is the only credential: no cookie, no session, so every
form carries it in its action; every POST is idempotent and answers with a redirect back to the page, which
says what was done."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from newsletter.domain.tokens import PreferencesToken
from newsletter.services.compliance import preferences, privacy, unsubscribe
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


async def _as_person(request: Request, token: str, act: Callable[[int], Awaitable[Response]]) -> Response:
    """`act` for the person the token names; the not-found page for a token that names nobody (forged, or a
    person erased since), whatever the action."""
    subscriber_id = _person(request, token)
    if subscriber_id is None:
        return page("not_found", 404)
    try:
        return await act(subscriber_id)
    except NotFound:
        return page("not_found", 404)


def _back(token: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"/preferences/{token}?done={done}", status_code=303, headers=PRIVATE)


async def _page(
    request: Request,
    token: str,
    *,
    status: int = 200,
    done: str = "",
    error: str = "",
    view: str = "preferences",
) -> Response:
    async def shown(subscriber_id: int) -> Response:
        found = await preferences.page(context(request).db, subscriber_id)
        return page(view, status, PRIVATE, token=token, person=found, done=DONE.get(done, ""), error=error)

    return await _as_person(request, token, shown)


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
    raw = await _field(request, "list")

    async def joined(subscriber_id: int) -> Response:
        if raw is None or not raw.isdecimal() or len(raw) > 18:
            return await _page(request, token, status=422, error="Choose one of the lists below.")
        evidence = _evidence(request, "preferences")
        try:
            changed = await preferences.join(context(request).db, subscriber_id, int(raw), evidence)
        except NotFound:
            return await _page(request, token, status=422, error="Choose one of the lists below.")
        except Conflict:
            return await _page(request, token, status=409, error="This address cannot join a list here.")
        return _back(token, "joined" if changed else "already")

    return await _as_person(request, token, joined)


@router.post("/preferences/{token}/name", response_class=HTMLResponse, summary="Change one's name")
async def rename(request: Request, token: TokenPath) -> Response:
    name = await _field(request, "name")

    async def renamed(subscriber_id: int) -> Response:
        try:
            await preferences.rename(context(request).db, subscriber_id, name or "")
        except Invalid as error:
            message = str(error).removeprefix("name: ").capitalize()
            return await _page(request, token, status=422, error=message)
        return _back(token, "renamed")

    return await _as_person(request, token, renamed)


@router.post("/preferences/{token}/leave", response_class=HTMLResponse, summary="Leave every list")
async def leave(request: Request, token: TokenPath) -> Response:
    async def left(subscriber_id: int) -> Response:
        if not await unsubscribe.leave_every_list(context(request).db, subscriber_id):
            raise NotFound("nobody")
        return _back(token, "left")

    return await _as_person(request, token, left)


@router.get("/preferences/{token}/data", summary="Everything held about the person, as JSON")
async def data(request: Request, token: TokenPath) -> Response:
    async def download(subscriber_id: int) -> Response:
        document = await privacy.export(context(request).db, subscriber_id)
        return Response(
            json.dumps(document, ensure_ascii=False, indent=2, default=str),
            media_type="application/json",
            headers={**PRIVATE, "Content-Disposition": 'attachment; filename="my-data.json"'},
        )

    return await _as_person(request, token, download)


@router.post("/preferences/{token}/delete", response_class=HTMLResponse, summary="Ask to delete one's data")
async def delete(request: Request, token: TokenPath) -> Response:
    """The confirmation step: nothing is deleted until the next form is sent."""
    return await _page(request, token, view="preferences_delete")


@router.post(
    "/preferences/{token}/delete/confirm", response_class=HTMLResponse, summary="Delete one's data, for good"
)
async def delete_confirmed(request: Request, token: TokenPath) -> Response:
    async def erased(subscriber_id: int) -> Response:
        # A second click finds nobody: it is done either way.
        with contextlib.suppress(NotFound):
            await privacy.erase(context(request).db, subscriber_id)
        return page("preferences_deleted", 200, PRIVATE)

    return await _as_person(request, token, erased)
