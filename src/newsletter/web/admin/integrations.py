"""Outgoing webhooks and the event record: endpoints registered, changed, tested, replayed and deleted by the
services the API calls, their attempts, and the latest events."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from newsletter.domain.subscriber import InvalidInput, SubscriberName
from newsletter.domain.vocabulary import EventType
from newsletter.services.errors import Invalid
from newsletter.services.integrations import events, webhooks
from newsletter.services.integrations.webhooks import EndpointChange
from newsletter.web.admin.core import Admin, SignedIn
from newsletter.web.api.common import Id

router = APIRouter()

PAGE_SIZE = 50
MAX_DESCRIPTION = 500
# What an endpoint may subscribe to, in the vocabulary's order; '*' is offered apart.
SUBSCRIBABLE = tuple(kind for kind in EventType if kind in webhooks.SUBSCRIBABLE)
EVENT_TYPES = tuple(EventType)


async def _values(admin: Admin) -> dict[str, Any]:
    """The endpoint form as it was posted, to check and, when refused, to show again."""
    form = await admin.request.form()
    return {
        "url": str(form.get("url", "")),
        "description": str(form.get("description", "")),
        "events": [value for value in form.getlist("events") if isinstance(value, str)],
        "active": form.get("active") == "yes",
    }


async def _change(admin: Admin, values: dict[str, Any]) -> EndpointChange:
    """The form, checked as the API checks a body: the URL resolved to allowed addresses, known types."""
    url = await webhooks.checked_url(values["url"], allow_private=admin.settings.webhook_allow_private)
    try:
        description = SubscriberName.parse(values["description"]).value
    except InvalidInput as error:
        raise Invalid(f"description: {error}") from None
    if len(description) > MAX_DESCRIPTION:
        raise Invalid(f"description: at most {MAX_DESCRIPTION} characters")
    return EndpointChange(url, description, webhooks.event_types(values["events"]), values["active"])


async def _webhooks_page(
    admin: Admin, *, status: int = 200, error: str | None = None, values: dict[str, Any] | None = None
) -> Response:
    return admin.render(
        "webhooks",
        status,
        endpoints=await webhooks.endpoints(admin.db),
        subscribable=SUBSCRIBABLE,
        values=values or {"url": "", "description": "", "events": [], "active": True},
        error=error,
        allow_private=admin.settings.webhook_allow_private,
    )


async def _endpoint_page(
    admin: Admin,
    endpoint_id: int,
    *,
    status: int = 200,
    error: str | None = None,
    values: dict[str, Any] | None = None,
    secret: str | None = None,
) -> Response:
    endpoint = await webhooks.get_endpoint(admin.db, endpoint_id)
    return admin.render(
        "webhook",
        status,
        endpoint=endpoint,
        values=values or endpoint,
        subscribable=SUBSCRIBABLE,
        error=error,
        secret=secret,
    )


@router.get("/admin/webhooks", response_class=HTMLResponse)
async def webhooks_page(admin: SignedIn) -> Response:
    return await _webhooks_page(admin)


@router.post("/admin/webhooks", response_class=HTMLResponse)
async def create_webhook(admin: SignedIn) -> Response:
    values = await _values(admin)
    try:
        created = await webhooks.create_endpoint(admin.db, await _change(admin, values))
    except Invalid as error:
        return await _webhooks_page(admin, status=422, error=str(error), values=values)
    # The secret is on this answer alone, as the API's: nothing shows it again.
    return await _endpoint_page(admin, created["id"], status=201, secret=created["secret"])


@router.get("/admin/webhooks/{endpoint_id}", response_class=HTMLResponse)
async def webhook_page(admin: SignedIn, endpoint_id: Id) -> Response:
    return await _endpoint_page(admin, endpoint_id)


@router.post("/admin/webhooks/{endpoint_id}", response_class=HTMLResponse)
async def update_webhook(admin: SignedIn, endpoint_id: Id) -> Response:
    values = await _values(admin)
    try:
        await webhooks.update_endpoint(admin.db, endpoint_id, await _change(admin, values))
    except Invalid as error:
        return await _endpoint_page(admin, endpoint_id, status=422, error=str(error), values=values)
    return admin.redirect(f"/admin/webhooks/{endpoint_id}", "The endpoint is saved.")


@router.post("/admin/webhooks/{endpoint_id}/active")
async def turn_webhook(admin: SignedIn, endpoint_id: Id) -> Response:
    """Turn an endpoint on (again, after it was turned off for failing: it starts afresh) or off."""
    active = (await admin.form()).get("active") == "yes"
    await webhooks.update_endpoint(admin.db, endpoint_id, EndpointChange(active=active))
    notice = (
        "The endpoint is on: new events go to it."
        if active
        else "The endpoint is off: nothing is sent to it."
    )
    return admin.redirect(f"/admin/webhooks/{endpoint_id}", notice)


@router.post("/admin/webhooks/{endpoint_id}/test")
async def test_webhook(admin: SignedIn, endpoint_id: Id) -> Response:
    sent = await webhooks.send_test(admin.db, endpoint_id)
    return admin.redirect(
        f"/admin/webhooks/{endpoint_id}/attempts",
        f"A test event (event {sent['event_id']}) is on its way; its attempt appears here once it is made.",
    )


@router.post("/admin/webhooks/{endpoint_id}/replay")
async def replay_webhook(admin: SignedIn, endpoint_id: Id) -> Response:
    raw = (await admin.form()).get("after", "").strip()
    if not raw.isascii() or not raw.isdigit() or int(raw) > 2**63 - 1:
        return admin.redirect(
            f"/admin/webhooks/{endpoint_id}", "Give the id of an event (0: every event kept).", error=True
        )
    queued = (await webhooks.replay(admin.db, endpoint_id, int(raw)))["queued"]
    notice = f"{queued} event{'s' if queued != 1 else ''} after event {int(raw)} queued to be sent again."
    return admin.redirect(f"/admin/webhooks/{endpoint_id}", notice)


@router.post("/admin/webhooks/{endpoint_id}/delete")
async def delete_webhook(admin: SignedIn, endpoint_id: Id) -> Response:
    if (await admin.form()).get("confirm") != "yes":
        return admin.redirect(
            f"/admin/webhooks/{endpoint_id}", "Tick the box to confirm the deletion.", error=True
        )
    await webhooks.delete_endpoint(admin.db, endpoint_id)
    return admin.redirect("/admin/webhooks", f"Webhook endpoint {endpoint_id} is deleted, with its history.")


@router.get("/admin/webhooks/{endpoint_id}/attempts", response_class=HTMLResponse)
async def attempts_page(
    admin: SignedIn, endpoint_id: Id, before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None
) -> Response:
    endpoint = await webhooks.get_endpoint(admin.db, endpoint_id)
    rows = await webhooks.attempts(admin.db, endpoint_id, before=before, limit=PAGE_SIZE)
    return admin.render(
        "webhook_attempts",
        endpoint=endpoint,
        attempts=rows,
        before=before,
        next_before=rows[-1]["id"] if len(rows) == PAGE_SIZE else None,
    )


@router.get("/admin/events", response_class=HTMLResponse)
async def events_page(
    admin: SignedIn,
    type: str = "",
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    selected = type if type in set(EventType) else ""
    rows = await events.recent_events(
        admin.db, before=before, types=[EventType(selected)] if selected else None, limit=PAGE_SIZE
    )
    shown = [
        {**row, "data": json.dumps(row["data"], ensure_ascii=False, separators=(",", ":"))} for row in rows
    ]
    return admin.render(
        "events",
        events=shown,
        types=EVENT_TYPES,
        selected=selected,
        retention_days=admin.settings.event_retention_days,
        before=before,
        next_before=rows[-1]["id"] if len(rows) == PAGE_SIZE else None,
    )
