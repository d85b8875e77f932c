"""The suppression list in the admin API: `/api/v1/suppressions`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from newsletter.domain.vocabulary import SuppressionReason
from newsletter.services.compliance import suppressions
from newsletter.web.api.common import PREFIX, Auth, Paging, email, read_page, text, write
from newsletter.web.api.models import Page, SuppressionOut

router = APIRouter(prefix=PREFIX, tags=["suppressions"])


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=320)
    # Other reasons than "manual" carry over a suppression list from another system.
    reason: SuppressionReason = SuppressionReason.MANUAL
    detail: str = Field(default="", max_length=1000)


@router.get(
    "/suppressions",
    summary="Suppressed addresses, with keyset pagination",
    response_model=Page[SuppressionOut],
)
async def get_suppressions(
    request: Request,
    _: Auth,
    page: Paging,
    reason: SuppressionReason | None = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    return await read_page(
        request,
        page,
        lambda db, after: suppressions.suppression_page(
            db, after=after, reason=reason, search=search, limit=page.limit
        ),
    )


@router.post(
    "/suppressions",
    status_code=201,
    summary="Suppress an address; one suppressed already is answered as it is",
    response_model=SuppressionOut,
)
async def post_suppression(request: Request, who: Auth, body: SuppressionIn) -> Response:
    address = email(body.email)
    detail = text(body.detail, "detail", max_length=1000)
    return await write(request, who, 201, lambda db: suppressions.suppress(db, address, body.reason, detail))


@router.delete("/suppressions/{email}", status_code=204, summary="Lift the suppression of an address")
async def delete_suppression(request: Request, who: Auth, email: str) -> Response:
    return await write(request, who, 204, lambda db: suppressions.lift(db, email))
