"""The event record in the admin API: `GET /api/v1/events?after=ID&type=T&limit=N`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from newsletter.domain.vocabulary import EventType
from newsletter.services.integrations.events import event_page
from newsletter.web.api.common import PREFIX, Auth, encode
from newsletter.web.api.models import EventPage
from newsletter.web.state import context

router = APIRouter(prefix=PREFIX, tags=["events"])


@router.get(
    "/events",
    summary="Events after a cursor, in the order they committed (the record keeps them for "
    "NEWSLETTER_EVENT_RETENTION_DAYS)",
    response_model=EventPage,
)
async def get_events(
    request: Request,
    _: Auth,
    after: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="The id of the last event read.")
    ] = None,
    type: Annotated[
        list[EventType] | None, Query(description="Only these types (repeat to give several).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    items = await event_page(context(request).db, after=after, types=type, limit=limit)
    body = {"items": items, "next_after": items[-1]["id"] if items else after}
    return Response(encode(body), 200, media_type="application/json")
