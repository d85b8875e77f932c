"""Lists in the admin API: `/api/v1/lists`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from newsletter.domain.subscriber import InvalidInput, ListSlug
from newsletter.domain.vocabulary import OptIn, Visibility
from newsletter.services.audience import lists
from newsletter.web.api.common import PREFIX, Auth, Id, invalid, read, text, write
from newsletter.web.api.models import ListOut

router = APIRouter(prefix=PREFIX, tags=["lists"])


class ListIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slug: str = Field(max_length=63, examples=["weekly"])
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    optin: OptIn = OptIn.DOUBLE
    # Public: anyone may sign up with the form or POST /subscriptions. Private: people are added by the
    # operator only (API, admin, import).
    visibility: Visibility = Visibility.PRIVATE


class ListPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    optin: OptIn | None = None
    visibility: Visibility | None = None


@router.get("/lists", summary="All lists with their subscriber counts", response_model=list[ListOut])
async def get_lists(request: Request, _: Auth) -> Response:
    return await read(request, lists.all_lists)


@router.post("/lists", status_code=201, summary="Create a list", response_model=ListOut)
async def post_list(request: Request, who: Auth, body: ListIn) -> Response:
    try:
        slug = ListSlug.parse(body.slug)
    except InvalidInput:
        raise invalid("slug: lowercase letters, digits and '-'") from None
    name = text(body.name, "name")
    return await write(
        request,
        who,
        201,
        lambda db: lists.create_list(db, slug, name, body.description, body.optin, body.visibility),
    )


@router.get("/lists/{list_id}", summary="One list", response_model=ListOut)
async def get_list(request: Request, _: Auth, list_id: Id) -> Response:
    return await read(request, lambda db: lists.get_list(db, list_id))


@router.patch("/lists/{list_id}", summary="Change a list", response_model=ListOut)
async def patch_list(request: Request, who: Auth, list_id: Id, body: ListPatch) -> Response:
    name = text(body.name, "name") if body.name is not None else None
    return await write(
        request,
        who,
        200,
        lambda db: lists.update_list(db, list_id, name, body.description, body.optin, body.visibility),
    )


@router.delete("/lists/{list_id}", status_code=204, summary="Delete a list and its subscriptions")
async def delete_list(request: Request, who: Auth, list_id: Id) -> Response:
    return await write(request, who, 204, lambda db: lists.delete_list(db, list_id))
