"""Segments: saved filters over people, written with a live count (or the position of the mistake) as they
are typed. Every change is a call to the service the API calls (services/audience/segments)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, Response

from newsletter.services.audience import segments
from newsletter.services.audience.segments import InvalidSegment
from newsletter.services.errors import Conflict, Invalid
from newsletter.web.admin.core import Admin, SignedIn
from newsletter.web.api.common import Id

router = APIRouter()
NO_STORE = {"Cache-Control": "no-store"}


async def _segments_page(
    admin: Admin, *, status: int = 200, error: str | None = None, values: dict[str, str] | None = None
) -> Response:
    return admin.render(
        "segments", status, segments=await segments.all_segments(admin.db), error=error, values=values or {}
    )


@router.get("/admin/segments", response_class=HTMLResponse)
async def segments_page(admin: SignedIn) -> Response:
    return await _segments_page(admin)


@router.post("/admin/segments", response_class=HTMLResponse)
async def create_segment(admin: SignedIn) -> Response:
    form = await admin.form()
    try:
        created = await segments.create_segment(admin.db, form.get("name", ""), form.get("expression", ""))
    except (Invalid, Conflict) as error:
        return await _segments_page(admin, status=422, error=str(error), values=form)
    return admin.redirect(f"/admin/segments/{created['id']}", f"The segment {created['name']} is saved.")


@router.post("/admin/segments/count.json")
async def live_count(admin: SignedIn) -> Response:
    """What the expression field holds, counted as it is typed (static/admin.js), or where it goes wrong."""
    form = await admin.form()
    try:
        count = await segments.count(admin.db, form.get("expression", ""))
    except InvalidSegment as error:
        body: dict[str, Any] = {"error": str(error), "position": error.position}
        return JSONResponse(body, status_code=422, headers=NO_STORE)
    return JSONResponse({"count": count.count, "estimated": count.estimated}, headers=NO_STORE)


async def _segment_page(
    admin: Admin,
    segment_id: int,
    *,
    status: int = 200,
    error: str | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    segment = await segments.get_segment(admin.db, segment_id)
    count = await segments.count(admin.db, segment["expression"])
    return admin.render(
        "segment", status, segment=segment, count=count, error=error, values=values or dict(segment)
    )


@router.get("/admin/segments/{segment_id}", response_class=HTMLResponse)
async def segment_page(admin: SignedIn, segment_id: Id) -> Response:
    return await _segment_page(admin, segment_id)


@router.post("/admin/segments/{segment_id}", response_class=HTMLResponse)
async def save_segment(admin: SignedIn, segment_id: Id) -> Response:
    form = await admin.form()
    try:
        await segments.update_segment(admin.db, segment_id, form.get("name", ""), form.get("expression", ""))
    except (Invalid, Conflict) as error:
        return await _segment_page(admin, segment_id, status=422, error=str(error), values=form)
    return admin.redirect(f"/admin/segments/{segment_id}", "The segment is saved.")


@router.post("/admin/segments/{segment_id}/delete", response_class=HTMLResponse)
async def delete_segment(admin: SignedIn, segment_id: Id) -> Response:
    try:
        await segments.delete_segment(admin.db, segment_id)
    except Conflict as error:
        return admin.redirect(f"/admin/segments/{segment_id}", str(error), error=True)
    return admin.redirect("/admin/segments", "The segment is deleted.")
