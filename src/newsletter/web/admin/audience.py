"""The dashboard, lists and subscribers."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, Response

from newsletter.domain.subscriber import InvalidInput, ListSlug, SubscriberName
from newsletter.domain.vocabulary import SUBSCRIBER_FILTERS, OptIn, SubscriberStatus, Visibility
from newsletter.services.audience import dashboard, lists, subscribers
from newsletter.services.compliance import privacy
from newsletter.services.errors import Conflict
from newsletter.web import embed
from newsletter.web.admin.core import Admin, SignedIn
from newsletter.web.api.common import Id

router = APIRouter()

PAGE_SIZE = 50


@router.get("/admin", response_class=HTMLResponse)
async def dashboard_page(admin: SignedIn) -> Response:
    return admin.render("dashboard", **await dashboard.dashboard(admin.db))


# Lists


def _list_fields(form: dict[str, str]) -> tuple[str, str, OptIn, Visibility | None]:
    name = SubscriberName.parse(form.get("name", "")).value
    if not 1 <= len(name) <= 200:
        raise InvalidInput("A list needs a name of 1 to 200 characters.")
    description = SubscriberName.parse(form.get("description", "").replace("\r\n", " ").replace("\n", " "))
    try:
        optin = OptIn(form.get("optin", OptIn.DOUBLE))
    except ValueError:
        raise InvalidInput("Opt-in is double or single.") from None
    raw_visibility = form.get("visibility")  # absent: a new list is private, a saved one stays as it is
    try:
        visibility = Visibility(raw_visibility) if raw_visibility is not None else None
    except ValueError:
        raise InvalidInput("A list is public or private.") from None
    return name, description.value[:2000], optin, visibility


@router.get("/admin/lists", response_class=HTMLResponse)
async def lists_page(admin: SignedIn) -> Response:
    return admin.render("lists", lists=await lists.all_lists(admin.db), values={}, error=None)


@router.post("/admin/lists", response_class=HTMLResponse)
async def create_list(admin: SignedIn) -> Response:
    form = await admin.form()
    try:
        try:
            slug = ListSlug.parse(form.get("slug", ""))
        except InvalidInput:
            raise InvalidInput(
                "The slug is made of lowercase letters, digits and '-' (e.g. weekly-news)."
            ) from None
        name, description, optin, visibility = _list_fields(form)
        created = await lists.create_list(
            admin.db, slug, name, description, optin, visibility or Visibility.PRIVATE
        )
    except (InvalidInput, Conflict) as error:
        return admin.render(
            "lists", 422, lists=await lists.all_lists(admin.db), values=form, error=str(error)
        )
    return admin.redirect(f"/admin/lists/{created['id']}", f"The list {created['name']} is created.")


def _list_page(
    admin: Admin, saved: dict[str, Any], status: int = 200, error: str | None = None, form: Any = None
) -> Response:
    """A list's page (with the fields as typed, when they were refused); a list open to public sign-up as
    saved shows the form to embed in another site."""
    public = saved["visibility"] == Visibility.PUBLIC
    challenge = admin.settings.signup_challenge == "pow"
    snippet = (
        embed.signup_snippet(admin.settings.base_url, saved["slug"], saved["name"], challenge=challenge)
        if public
        else None
    )
    return admin.render(
        "list",
        status,
        list={**saved, **(form or {})},
        error=error,
        snippet=snippet,
        origins=admin.settings.allowed_origins,
        challenge=challenge,
    )


@router.get("/admin/lists/{list_id}", response_class=HTMLResponse)
async def list_page(admin: SignedIn, list_id: Id) -> Response:
    return _list_page(admin, await lists.get_list(admin.db, list_id))


@router.post("/admin/lists/{list_id}", response_class=HTMLResponse)
async def update_list(admin: SignedIn, list_id: Id) -> Response:
    form = await admin.form()
    try:
        name, description, optin, visibility = _list_fields(form)
        updated = await lists.update_list(admin.db, list_id, name, description, optin, visibility)
    except InvalidInput as error:
        found = await lists.get_list(admin.db, list_id)
        return _list_page(admin, found, 422, str(error), form)
    return admin.redirect(f"/admin/lists/{list_id}", f"The list {updated['name']} is saved.")


# Subscribers


@router.get("/admin/subscribers", response_class=HTMLResponse)
async def subscribers_page(
    admin: SignedIn,
    q: Annotated[str, Query(max_length=200)] = "",
    list: Annotated[str, Query(max_length=63)] = "",
    status: str = "",
    match: str = "",
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> Response:
    status = status if status in SUBSCRIBER_FILTERS else ""
    contains = match == "contains"
    found = await subscribers.subscriber_page(
        admin.db,
        after=after,
        list_slug=list or None,
        status=status or None,
        search=q.strip() or None,
        contains=contains,
        limit=PAGE_SIZE,
    )
    filters = {"q": q, "list": list, "status": status, "match": "contains" if contains else ""}
    return admin.render(
        "subscribers",
        people=found,
        lists=await lists.list_names(admin.db),
        filters=filters,
        statuses=SUBSCRIBER_FILTERS,
        after=after,
        next_after=found[-1]["id"] if len(found) == PAGE_SIZE else None,
    )


@router.get("/admin/subscribers/{subscriber_id}", response_class=HTMLResponse)
async def subscriber_page(admin: SignedIn, subscriber_id: Id) -> Response:
    person = await subscribers.get_subscriber(admin.db, subscriber_id)
    deliveries = await subscribers.subscriber_deliveries(admin.db, subscriber_id, 50)
    return admin.render("subscriber", person=person, deliveries=deliveries)


@router.post("/admin/subscribers/{subscriber_id}/unsubscribe")
async def unsubscribe_subscriber(admin: SignedIn, subscriber_id: Id) -> Response:
    ended = await subscribers.unsubscribe_everywhere(admin.db, subscriber_id)
    notice = (
        f"Unsubscribed from {ended} list{'s' if ended != 1 else ''}; the address is suppressed until the "
        "person signs up and confirms again."
    )
    return admin.redirect(f"/admin/subscribers/{subscriber_id}", notice)


async def _set_status(admin: Admin, subscriber_id: int, status: SubscriberStatus) -> Response:
    await subscribers.update_subscriber(admin.db, subscriber_id, status=status)
    notice = (
        "Blocklisted: no email goes to this person." if status == SubscriberStatus.BLOCKLISTED else "Active."
    )
    return admin.redirect(f"/admin/subscribers/{subscriber_id}", notice)


@router.post("/admin/subscribers/{subscriber_id}/blocklist")
async def blocklist_subscriber(admin: SignedIn, subscriber_id: Id) -> Response:
    return await _set_status(admin, subscriber_id, SubscriberStatus.BLOCKLISTED)


@router.post("/admin/subscribers/{subscriber_id}/unblock")
async def unblock_subscriber(admin: SignedIn, subscriber_id: Id) -> Response:
    return await _set_status(admin, subscriber_id, SubscriberStatus.ACTIVE)


@router.post("/admin/subscribers/{subscriber_id}/delete")
async def erase_subscriber(admin: SignedIn, subscriber_id: Id) -> Response:
    form = await admin.form()
    if form.get("confirm") != "yes":
        return admin.redirect(
            f"/admin/subscribers/{subscriber_id}", "Tick the box to confirm the erasure.", error=True
        )
    await privacy.erase(admin.db, subscriber_id)
    return admin.redirect("/admin/subscribers", f"Subscriber {subscriber_id} is erased.")


@router.get("/admin/subscribers/{subscriber_id}/export")
async def export_subscriber(admin: SignedIn, subscriber_id: Id) -> Response:
    document = await privacy.export(admin.db, subscriber_id)
    return Response(
        json.dumps(jsonable_encoder(document), indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="subscriber-{subscriber_id}.json"',
            "Cache-Control": "no-store",
        },
    )
