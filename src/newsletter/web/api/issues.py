"""Issues in the admin API: `/api/v1/issues`, from draft to sent, and the ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from newsletter.db.database import Database
from newsletter.domain.vocabulary import DeliveryStatus, IssueStatus
from newsletter.services.errors import Invalid
from newsletter.services.sending import issues
from newsletter.web.api.common import (
    PREFIX,
    Auth,
    Id,
    PageRequest,
    Paging,
    email,
    invalid,
    read,
    read_page,
    write,
)
from newsletter.web.api.models import DeliveryOut, IssueOut, Page, Queued, Retried

router = APIRouter(prefix=PREFIX, tags=["issues"])


SEGMENT = (
    "Send only to the people of the lists who match this segment (each email's unsubscribe stays per list)."
)


class IssueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = Field(max_length=500)
    markdown: str | None = Field(default=None, max_length=1_000_000)
    html: str | None = Field(default=None, max_length=1_000_000)
    text: str | None = Field(default=None, max_length=1_000_000)
    lists: list[str] = Field(default_factory=lambda: ["default"], max_length=100)
    segment: int | None = Field(default=None, ge=1, le=2**63 - 1, description=SEGMENT)


class IssuePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str | None = Field(default=None, max_length=500)
    markdown: str | None = Field(default=None, max_length=1_000_000)
    html: str | None = Field(default=None, max_length=1_000_000)
    text: str | None = Field(default=None, max_length=1_000_000)
    lists: list[str] | None = Field(default=None, max_length=100)
    segment: int | None = Field(
        default=None, ge=1, le=2**63 - 1, description=SEGMENT + " `null`: no segment."
    )


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    send_at: datetime | None = None

    @field_validator("send_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("send_at needs a time zone, e.g. 2026-12-01T09:00:00Z")
        return value


class TestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    addresses: list[str] = Field(min_length=1, max_length=20)


def _content(subject: str, markdown: str | None, html: str | None, text: str | None) -> issues.IssueContent:
    try:
        return issues.IssueContent.parse(subject, markdown, html, text)
    except Invalid as error:
        raise invalid(str(error)) from None


@router.post(
    "/issues",
    status_code=201,
    summary="Create a draft from Markdown, or from HTML and text",
    response_model=IssueOut,
)
async def post_issue(request: Request, who: Auth, body: IssueIn) -> Response:
    content = _content(body.subject, body.markdown, body.html, body.text)
    return await write(
        request, who, 201, lambda db: issues.create_issue(db, content, body.lists, body.segment)
    )


@router.get("/issues", summary="Issues, newest first", response_model=Page[IssueOut])
async def get_issues(
    request: Request,
    _: Auth,
    status: IssueStatus | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    return await read_page(
        request,
        PageRequest(cursor, limit),
        lambda db, before: issues.list_issues(db, before=before, status=status, limit=limit),
    )


@router.get(
    "/issues/{issue_id}", summary="One issue with its delivery counts by status", response_model=IssueOut
)
async def get_issue(request: Request, _: Auth, issue_id: Id) -> Response:
    return await read(request, lambda db: issues.get_issue(db, issue_id))


@router.patch("/issues/{issue_id}", summary="Change a draft", response_model=IssueOut)
async def patch_issue(request: Request, who: Auth, issue_id: Id, body: IssuePatch) -> Response:
    content = None
    if body.subject is not None or body.markdown is not None or body.html is not None:
        if body.subject is None:
            raise invalid("subject: required when the content changes")
        content = _content(body.subject, body.markdown, body.html, body.text)
    segment: int | Literal["unchanged"] | None = (
        body.segment if "segment" in body.model_fields_set else "unchanged"
    )
    return await write(
        request, who, 200, lambda db: issues.update_issue(db, issue_id, content, body.lists, segment)
    )


@router.post(
    "/issues/{issue_id}/send", status_code=202, summary="Send now, or at send_at", response_model=IssueOut
)
async def send_issue(request: Request, who: Auth, issue_id: Id, body: SendIn | None = None) -> Response:
    send_at = body.send_at if body else None
    request_id = request.state.request_id
    return await write(request, who, 202, lambda db: issues.send_issue(db, issue_id, send_at, request_id))


@router.post(
    "/issues/{issue_id}/pause", status_code=202, summary="Stop sending until resumed", response_model=IssueOut
)
async def pause_issue(request: Request, who: Auth, issue_id: Id) -> Response:
    return await write(request, who, 202, lambda db: issues.pause_issue(db, issue_id))


@router.post("/issues/{issue_id}/resume", status_code=202, summary="Send the rest", response_model=IssueOut)
async def resume_issue(request: Request, who: Auth, issue_id: Id) -> Response:
    return await write(request, who, 202, lambda db: issues.resume_issue(db, issue_id))


@router.post(
    "/issues/{issue_id}/cancel", status_code=202, summary="Stop sending for good", response_model=IssueOut
)
async def cancel_issue(request: Request, who: Auth, issue_id: Id) -> Response:
    return await write(request, who, 202, lambda db: issues.cancel_issue(db, issue_id))


@router.post(
    "/issues/{issue_id}/test",
    status_code=202,
    summary="Send test copies to the given addresses",
    response_model=Queued,
)
async def test_issue(request: Request, who: Auth, issue_id: Id, body: TestIn) -> Response:
    addresses = [email(raw).value for raw in body.addresses]
    request_id = request.state.request_id

    async def queue(db: Database) -> dict[str, int]:
        return {"queued": await issues.test_send(db, issue_id, addresses, request_id)}

    return await write(request, who, 202, queue)


@router.get(
    "/issues/{issue_id}/deliveries",
    summary="The delivery ledger of an issue",
    response_model=Page[DeliveryOut],
)
async def get_deliveries(
    request: Request,
    _: Auth,
    issue_id: Id,
    page: Paging,
    status: DeliveryStatus | None = None,
) -> Response:
    return await read_page(
        request,
        page,
        lambda db, after: issues.deliveries(db, issue_id, status=status, after=after, limit=page.limit),
    )


@router.post(
    "/issues/{issue_id}/retry-failed",
    status_code=202,
    summary="Queue the failed deliveries again",
    response_model=Retried,
)
async def retry_failed(request: Request, who: Auth, issue_id: Id) -> Response:
    async def retry(db: Database) -> dict[str, int]:
        return {"retried": (await issues.retry_failed(db, issue_id)).retried}

    return await write(request, who, 202, retry)
