"""The suppression list in the admin API (`/api/v1/suppressions`), with the API's tokens, idempotent POSTs
and errors."""

from __future__ import annotations

from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from newsletter.services import suppressions
from newsletter.web.api import Auth, _cursor, _page, _parse_person, _read, _text, _write

router = APIRouter(prefix="/api/v1", tags=["admin"])

Reason = Literal["hard_bounce", "complaint", "unsubscribe_all", "manual"]


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=320)
    # Other reasons than "manual" carry over a suppression list from another system.
    reason: Reason = "manual"
    detail: str = Field(default="", max_length=1000)


@router.get("/suppressions", summary="Suppressed addresses, with keyset pagination")
async def get_suppressions(
    request: Request,
    _: Auth,
    reason: Reason | None = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    after = _cursor(cursor)

    async def page(conn: asyncpg.Connection) -> dict[str, object]:
        items = await suppressions.suppression_page(
            conn, after=after, reason=reason, search=search, limit=limit
        )
        return _page(items, limit)

    return await _read(request, page)


@router.post(
    "/suppressions",
    status_code=201,
    summary="Suppress an address; one suppressed already is answered as it is",
)
async def post_suppression(request: Request, who: Auth, body: SuppressionIn) -> Response:
    email, _ = _parse_person(body.email, None)
    assert email is not None
    detail = _text(body.detail, "detail", max_length=1000)
    return await _write(
        request, who, 201, lambda conn: suppressions.suppress(conn, email, body.reason, detail)
    )


@router.delete("/suppressions/{email}", status_code=204, summary="Lift the suppression of an address")
async def delete_suppression(request: Request, who: Auth, email: str) -> Response:
    response = await _write(request, who, 204, lambda conn: suppressions.lift(conn, email))
    return Response(status_code=204) if response.status_code == 204 else response
