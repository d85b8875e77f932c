"""Segments in the admin API: `/api/v1/segments` and their counts (SPEC section 13)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from newsletter.services.audience import segments
from newsletter.web.api.common import PREFIX, Auth, Id, read, write
from newsletter.web.api.models import SegmentCount, SegmentOut

router = APIRouter(prefix=PREFIX, tags=["segments"])
EXPRESSION = Field(
    min_length=1,
    max_length=4000,
    description="In the segment language (README, 'Segments'); a mistake: 422, its `position` says where.",
    examples=['attributes.plan = "pro" and confirmed_at > 30d'],
)


class SegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, examples=["Pro, joined this month"])
    expression: str = EXPRESSION


class SegmentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    expression: str | None = Field(default=None, min_length=1, max_length=4000)


class ExpressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expression: str = EXPRESSION


@router.get("/segments", summary="Every segment, by name", response_model=list[SegmentOut])
async def get_segments(request: Request, _: Auth) -> Response:
    return await read(request, segments.all_segments)


@router.post("/segments", status_code=201, summary="Save a segment", response_model=SegmentOut)
async def post_segment(request: Request, who: Auth, body: SegmentIn) -> Response:
    return await write(request, who, 201, lambda db: segments.create_segment(db, body.name, body.expression))


@router.post(
    "/segments/count",
    summary="Count the people an expression matches, without saving it (checks it, too)",
    response_model=SegmentCount,
)
async def count_expression(request: Request, _: Auth, body: ExpressionIn) -> Response:
    return await read(request, lambda db: segments.count(db, body.expression))


@router.get("/segments/{segment_id}", summary="One segment", response_model=SegmentOut)
async def get_segment(request: Request, _: Auth, segment_id: Id) -> Response:
    return await read(request, lambda db: segments.get_segment(db, segment_id))


@router.patch(
    "/segments/{segment_id}", summary="Rename a segment or change its expression", response_model=SegmentOut
)
async def patch_segment(request: Request, who: Auth, segment_id: Id, body: SegmentPatch) -> Response:
    return await write(
        request, who, 200, lambda db: segments.update_segment(db, segment_id, body.name, body.expression)
    )


@router.delete(
    "/segments/{segment_id}",
    status_code=204,
    summary="Delete a segment (refused while an issue not yet started uses it)",
)
async def delete_segment(request: Request, who: Auth, segment_id: Id) -> Response:
    return await write(request, who, 204, lambda db: segments.delete_segment(db, segment_id))


@router.get(
    "/segments/{segment_id}/count",
    summary="How many active people the segment matches: counted, or estimated above 50,000",
    response_model=SegmentCount,
)
async def count_segment(request: Request, _: Auth, segment_id: Id) -> Response:
    return await read(request, lambda db: segments.count_saved(db, segment_id))
