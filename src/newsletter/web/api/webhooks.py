"""Outgoing webhooks in the admin API: `/api/v1/webhooks` (SPEC section 11)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from newsletter.services.errors import Invalid
from newsletter.services.integrations import webhooks
from newsletter.services.integrations.webhooks import EndpointChange
from newsletter.web.api.common import PREFIX, Auth, Id, Paging, invalid, read, read_page, text, write
from newsletter.web.api.models import (
    Page,
    Queued,
    WebhookAttemptOut,
    WebhookCreated,
    WebhookOut,
    WebhookTestOut,
)
from newsletter.web.state import context

router = APIRouter(prefix=PREFIX, tags=["webhooks"])

EVENTS_FIELD = Field(
    min_length=1,
    max_length=100,
    description='Event types (see GET /api/v1/events), or `["*"]` for every type.',
    examples=[["subscription.confirmed", "delivery.bounced"]],
)


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2000, examples=["https://crm.example/hooks"])
    events: list[Annotated[str, Field(max_length=100)]] = EVENTS_FIELD
    description: str = Field(default="", max_length=500)
    active: bool = True


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, max_length=2000)
    events: list[Annotated[str, Field(max_length=100)]] | None = Field(
        default=None, min_length=1, max_length=100
    )
    description: str | None = Field(default=None, max_length=500)
    active: bool | None = Field(
        default=None, description="true turns an endpoint on again (after it was turned off for failing)."
    )


async def _change(request: Request, body: WebhookIn | WebhookPatch) -> EndpointChange:
    """The change, checked at the edge: the URL resolved to public addresses before any transaction."""
    allow_private = context(request).settings.webhook_allow_private
    try:
        url = (
            await webhooks.checked_url(body.url, allow_private=allow_private)
            if body.url is not None
            else None
        )
        events = webhooks.event_types(body.events) if body.events is not None else None
    except Invalid as error:
        raise invalid(str(error)) from None
    description = (
        text(body.description, "description", max_length=500) if body.description is not None else None
    )
    return EndpointChange(url, description, events, body.active)


@router.get(
    "/webhooks", summary="Every webhook endpoint (without its secret)", response_model=list[WebhookOut]
)
async def get_webhooks(request: Request, _: Auth) -> Response:
    return await read(request, webhooks.endpoints)


@router.post(
    "/webhooks",
    status_code=201,
    summary="Register an endpoint; its signing secret is in this answer only",
    response_model=WebhookCreated,
)
async def post_webhook(request: Request, who: Auth, body: WebhookIn) -> Response:
    change = await _change(request, body)
    return await write(request, who, 201, lambda db: webhooks.create_endpoint(db, change))


@router.get(
    "/webhooks/{endpoint_id}", summary="One endpoint, with what waits for it", response_model=WebhookOut
)
async def get_webhook(request: Request, _: Auth, endpoint_id: Id) -> Response:
    return await read(request, lambda db: webhooks.get_endpoint(db, endpoint_id))


@router.patch("/webhooks/{endpoint_id}", summary="Change an endpoint", response_model=WebhookOut)
async def patch_webhook(request: Request, who: Auth, endpoint_id: Id, body: WebhookPatch) -> Response:
    change = await _change(request, body)
    return await write(request, who, 200, lambda db: webhooks.update_endpoint(db, endpoint_id, change))


@router.delete("/webhooks/{endpoint_id}", status_code=204, summary="Delete an endpoint and its history")
async def delete_webhook(request: Request, who: Auth, endpoint_id: Id) -> Response:
    return await write(request, who, 204, lambda db: webhooks.delete_endpoint(db, endpoint_id))


@router.get(
    "/webhooks/{endpoint_id}/attempts",
    summary="The requests made to an endpoint, newest first, with its answers",
    response_model=Page[WebhookAttemptOut],
)
async def get_attempts(request: Request, _: Auth, endpoint_id: Id, page: Paging) -> Response:
    return await read_page(
        request,
        page,
        lambda db, before: webhooks.attempts(db, endpoint_id, before=before, limit=page.limit),
    )


@router.post(
    "/webhooks/{endpoint_id}/test",
    status_code=202,
    summary="Send the endpoint a `webhook.test` event; its attempt shows how the endpoint answered",
    response_model=WebhookTestOut,
)
async def post_test(request: Request, who: Auth, endpoint_id: Id) -> Response:
    return await write(request, who, 202, lambda db: webhooks.send_test(db, endpoint_id))


@router.post(
    "/webhooks/{endpoint_id}/replay",
    status_code=202,
    summary="Send the endpoint again every event of its types after the event `after`",
    response_model=Queued,
)
async def post_replay(
    request: Request,
    who: Auth,
    endpoint_id: Id,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="An event id (0: every event kept).")],
) -> Response:
    return await write(request, who, 202, lambda db: webhooks.replay(db, endpoint_id, after))
