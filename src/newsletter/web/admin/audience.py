"""The dashboard, lists and subscribers."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, Response

from newsletter.domain.subscriber import InvalidInput, ListSlug, SubscriberName
from newsletter.services import audience, overview, privacy
from newsletter.services.errors import Conflict, NotFound
from newsletter.web.admin.core import SignedIn
from newsletter.web.api import Id

router = APIRouter()

PAGE_SIZE = 50
SUBSCRIBER_STATUSES = ("active", "blocklisted", "pending", "confirmed", "unsubscribed")


@router.get("/admin", response_class=HTMLResponse)
async def dashboard(admin: SignedIn) -> Response:
    async with admin.pool.acquire() as conn:
        data = await overview.dashboard(conn)
    return admin.render("dashboard", **data)


# Lists


def _list_fields(form: dict[str, str]) -> tuple[str, str, str, str | None]:
    name = SubscriberName.parse(form.get("name", "")).value
    if not 1 <= len(name) <= 200:
        raise InvalidInput("A list needs a name of 1 to 200 characters.")
    description = SubscriberName.parse(form.get("description", "").replace("\r\n", " ").replace("\n", " "))
    optin = form.get("optin", "double")
    if optin not in ("double", "single"):
        raise InvalidInput("Opt-in is double or single.")
    visibility = form.get("visibility")  # absent: a new list is private, a saved one stays as it is
    if visibility not in (None, "public", "private"):
        raise InvalidInput("A list is public or private.")
    return name, description.value[:2000], optin, visibility


@router.get("/admin/lists", response_class=HTMLResponse)
async def lists_page(admin: SignedIn) -> Response:
    async with admin.pool.acquire() as conn:
        lists = await overview.lists(conn)
    return admin.render("lists", lists=lists, values={}, error=None)


@router.post("/admin/lists", response_class=HTMLResponse)
async def create_list(admin: SignedIn) -> Response:
    form = await admin.form()
    try:
        slug = ListSlug.parse(form.get("slug", "")).value
    except InvalidInput:
        slug = ""
    try:
        if not slug:
            raise InvalidInput("The slug is made of lowercase letters, digits and '-' (e.g. weekly-news).")
        name, description, optin, visibility = _list_fields(form)
        async with admin.pool.acquire() as conn:
            created = await audience.create_list(
                conn, slug, name, description, optin, visibility or "private"
            )
    except (InvalidInput, Conflict) as error:
        async with admin.pool.acquire() as conn:
            lists = await overview.lists(conn)
        return admin.render("lists", 422, lists=lists, values=form, error=str(error))
    return admin.redirect(f"/admin/lists/{created['id']}", f"The list {created['name']} is created.")


@router.get("/admin/lists/{list_id}", response_class=HTMLResponse)
async def list_page(admin: SignedIn, list_id: Id) -> Response:
    try:
        async with admin.pool.acquire() as conn:
            found = await overview.get_list(conn, list_id)
    except NotFound:
        return admin.render("error", 404, title="Not found", message=f"There is no list {list_id}.")
    return admin.render("list", list=found, error=None)


@router.post("/admin/lists/{list_id}", response_class=HTMLResponse)
async def update_list(admin: SignedIn, list_id: Id) -> Response:
    form = await admin.form()
    async with admin.pool.acquire() as conn:
        try:
            name, description, optin, visibility = _list_fields(form)
            updated = await audience.update_list(conn, list_id, name, description, optin, visibility)
        except InvalidInput as error:
            found = await overview.get_list(conn, list_id)
            return admin.render("list", 422, list={**found, **form}, error=str(error))
        except NotFound:
            return admin.render("error", 404, title="Not found", message=f"There is no list {list_id}.")
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
    status = status if status in SUBSCRIBER_STATUSES else ""
    contains = match == "contains"
    async with admin.pool.acquire() as conn:
        lists = await audience.list_names(conn)
        list_ids = {known["slug"]: known["id"] for known in lists}
        known_list = not list or list in list_ids
        people = (
            await overview.subscriber_page(
                conn,
                after=after,
                list_id=list_ids.get(list),
                status=status or None,
                search=q.strip() or None,
                contains=contains,
                limit=PAGE_SIZE,
            )
            if known_list
            else []
        )
    filters = {"q": q, "list": list, "status": status, "match": "contains" if contains else ""}
    next_after = people[-1]["id"] if len(people) == PAGE_SIZE else None
    return admin.render(
        "subscribers",
        people=people,
        lists=lists,
        filters=filters,
        statuses=SUBSCRIBER_STATUSES,
        after=after,
        next_after=next_after,
    )


@router.get("/admin/subscribers/{subscriber_id}", response_class=HTMLResponse)
async def subscriber_page(admin: SignedIn, subscriber_id: Id) -> Response:
    async with admin.pool.acquire() as conn:
        try:
            person = await audience.get_subscriber(conn, subscriber_id)
        except NotFound:
            return admin.render(
                "error", 404, title="Not found", message=f"There is no subscriber {subscriber_id}."
            )
        deliveries = await audience.subscriber_deliveries(conn, subscriber_id, 50)
    return admin.render("subscriber", person=person, deliveries=deliveries)


async def _act(admin: SignedIn, subscriber_id: int, action: str) -> Response:
    async with admin.pool.acquire() as conn, conn.transaction():
        try:
            if action == "unsubscribe":
                ended = await audience.unsubscribe_everywhere(conn, subscriber_id)
                notice = (
                    f"Unsubscribed from {ended} list{'s' if ended != 1 else ''}; the address is suppressed"
                    " until the person signs up and confirms again."
                )
            elif action in ("blocklist", "unblock"):
                status = "blocklisted" if action == "blocklist" else "active"
                await audience.update_subscriber(conn, subscriber_id, None, None, status)
                notice = (
                    "Blocklisted: no email goes to this person." if status == "blocklisted" else "Active."
                )
            else:
                await privacy.erase(conn, subscriber_id)
                return admin.redirect("/admin/subscribers", f"Subscriber {subscriber_id} is erased.")
        except NotFound:
            return admin.render(
                "error", 404, title="Not found", message=f"There is no subscriber {subscriber_id}."
            )
    return admin.redirect(f"/admin/subscribers/{subscriber_id}", notice)


@router.post("/admin/subscribers/{subscriber_id}/unsubscribe")
async def unsubscribe_subscriber(admin: SignedIn, subscriber_id: Id) -> Response:
    return await _act(admin, subscriber_id, "unsubscribe")


@router.post("/admin/subscribers/{subscriber_id}/blocklist")
async def blocklist_subscriber(admin: SignedIn, subscriber_id: Id) -> Response:
    return await _act(admin, subscriber_id, "blocklist")


@router.post("/admin/subscribers/{subscriber_id}/unblock")
async def unblock_subscriber(admin: SignedIn, subscriber_id: Id) -> Response:
    return await _act(admin, subscriber_id, "unblock")


@router.post("/admin/subscribers/{subscriber_id}/delete")
async def erase_subscriber(admin: SignedIn, subscriber_id: Id) -> Response:
    form = await admin.form()
    if form.get("confirm") != "yes":
        return admin.redirect(
            f"/admin/subscribers/{subscriber_id}", "Tick the box to confirm the erasure.", error=True
        )
    return await _act(admin, subscriber_id, "erase")


@router.get("/admin/subscribers/{subscriber_id}/export")
async def export_subscriber(admin: SignedIn, subscriber_id: Id) -> Response:
    async with admin.pool.acquire() as conn:
        try:
            document = await privacy.export(conn, subscriber_id)
        except NotFound:
            return admin.render(
                "error", 404, title="Not found", message=f"There is no subscriber {subscriber_id}."
            )
    return Response(
        json.dumps(jsonable_encoder(document), indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="subscriber-{subscriber_id}.json"',
            "Cache-Control": "no-store",
        },
    )
