"""Subscribers in the admin API: `/api/v1/subscribers` (the CSV transfer routes are in transfer.py)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from newsletter.domain.vocabulary import SubscriberStatus, SubscriptionStatus
from newsletter.services.audience import subscribers
from newsletter.services.compliance import privacy
from newsletter.web.api.common import PREFIX, Auth, Id, Paging, email, name, read, read_page, write
from newsletter.web.api.models import Page, SubscriberDetail, SubscriberExport, SubscriberOut

router = APIRouter(prefix=PREFIX, tags=["subscribers"])

MAX_ATTRIBUTES_JSON = 16_384


def _small(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(json.dumps(value)) > MAX_ATTRIBUTES_JSON:
        raise ValueError("attributes are limited to 16 KB of JSON")
    return value


Attributes = Annotated[dict[str, Any], AfterValidator(_small)]


class SubscriberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=320)
    name: str = Field(default="", max_length=256)
    lists: list[str] = Field(default_factory=lambda: ["default"], max_length=100)
    status: Literal[SubscriptionStatus.CONFIRMED, SubscriptionStatus.PENDING] = SubscriptionStatus.PENDING
    attributes: Attributes = Field(default_factory=dict)


class SubscriberPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=256)
    status: SubscriberStatus | None = None
    attributes: Attributes | None = None


@router.get(
    "/subscribers",
    summary="Subscribers, filtered, with keyset pagination",
    response_model=Page[SubscriberOut],
)
async def get_subscribers(
    request: Request,
    _: Auth,
    page: Paging,
    list: str | None = None,
    status: SubscriberStatus | SubscriptionStatus | None = None,
    search: Annotated[
        str | None, Query(max_length=200, description="The beginning of the address or of the name.")
    ] = None,
    match: Annotated[
        Literal["beginning", "contains"],
        Query(description="`contains` finds the search text anywhere (slow on a large list)."),
    ] = "beginning",
) -> Response:
    return await read_page(
        request,
        page,
        lambda db, after: subscribers.subscriber_page(
            db,
            after=after,
            list_slug=list,
            status=status,
            search=search or None,
            contains=match == "contains",
            limit=page.limit,
        ),
    )


@router.post(
    "/subscribers",
    status_code=201,
    summary="Add a subscriber (as pending, or already confirmed)",
    response_model=SubscriberDetail,
)
async def post_subscriber(request: Request, who: Auth, body: SubscriberIn) -> Response:
    address, given_name = email(body.email), name(body.name)
    request_id = request.state.request_id
    return await write(
        request,
        who,
        201,
        lambda db: subscribers.create_subscriber(
            db, address, given_name, body.attributes, body.lists, body.status, request_id
        ),
    )


@router.get(
    "/subscribers/{subscriber_id}",
    summary="One subscriber with subscriptions and consent evidence",
    response_model=SubscriberDetail,
)
async def get_subscriber(request: Request, _: Auth, subscriber_id: Id) -> Response:
    return await read(request, lambda db: subscribers.get_subscriber(db, subscriber_id))


@router.patch(
    "/subscribers/{subscriber_id}",
    summary="Change name, attributes or status",
    response_model=SubscriberDetail,
)
async def patch_subscriber(request: Request, who: Auth, subscriber_id: Id, body: SubscriberPatch) -> Response:
    new_name = name(body.name) if body.name is not None else None
    return await write(
        request,
        who,
        200,
        lambda db: subscribers.update_subscriber(db, subscriber_id, new_name, body.attributes, body.status),
    )


@router.delete(
    "/subscribers/{subscriber_id}",
    status_code=204,
    summary="Erase a subscriber: every personal datum goes; past issues keep their counts",
)
async def delete_subscriber(request: Request, who: Auth, subscriber_id: Id) -> Response:
    return await write(request, who, 204, lambda db: privacy.erase(db, subscriber_id))


@router.get(
    "/subscribers/{subscriber_id}/export",
    summary="Everything held about a subscriber",
    response_model=SubscriberExport,
)
async def export_subscriber(request: Request, _: Auth, subscriber_id: Id) -> Response:
    return await read(request, lambda db: privacy.export(db, subscriber_id))
