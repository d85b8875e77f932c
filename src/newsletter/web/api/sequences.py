"""Sequences in the admin API: `/api/v1/sequences`, their steps and their members (SPEC section 12)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from newsletter.db.database import Database
from newsletter.domain.vocabulary import MemberStatus, SequenceStatus
from newsletter.services.automations import sequences
from newsletter.services.automations.sequences import MAX_DELAY_SECONDS, StepContent
from newsletter.services.errors import Invalid
from newsletter.web.api.common import PREFIX, Auth, Id, Paging, invalid, read, read_page, text, write
from newsletter.web.api.models import Entered, MemberOut, Page, SequenceDetail, SequenceOut, StepOut
from newsletter.web.state import context

router = APIRouter(prefix=PREFIX, tags=["sequences"])
StepId = Annotated[int, Path(ge=1, le=2**63 - 1)]
DELAY = Field(
    ge=0,
    le=MAX_DELAY_SECONDS,
    description="Seconds after entering (the first step) or after the step before.",
    examples=[172800],
)


class SequenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, examples=["Welcome"])
    list: str = Field(default="default", max_length=63)
    status: SequenceStatus = SequenceStatus.ACTIVE


class SequencePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)


class StepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    delay_seconds: int = DELAY
    subject: str = Field(max_length=500)
    markdown: str | None = Field(default=None, max_length=1_000_000)
    html: str | None = Field(default=None, max_length=1_000_000)
    text: str | None = Field(default=None, max_length=1_000_000)


class StepPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    delay_seconds: int | None = Field(default=None, ge=0, le=MAX_DELAY_SECONDS)
    subject: str | None = Field(default=None, max_length=500)
    markdown: str | None = Field(default=None, max_length=1_000_000)
    html: str | None = Field(default=None, max_length=1_000_000)
    text: str | None = Field(default=None, max_length=1_000_000)


def _step(request: Request, **fields: Any) -> StepContent:
    try:
        return StepContent.parse(context(request).composer, **fields)
    except Invalid as error:
        raise invalid(str(error)) from None


@router.get("/sequences", summary="Every sequence, with its member counts", response_model=list[SequenceOut])
async def get_sequences(request: Request, _: Auth) -> Response:
    return await read(request, sequences.sequences)


@router.post(
    "/sequences", status_code=201, summary="Create a sequence for a list", response_model=SequenceDetail
)
async def post_sequence(request: Request, who: Auth, body: SequenceIn) -> Response:
    name = text(body.name, "name")
    return await write(
        request, who, 201, lambda db: sequences.create_sequence(db, body.list, name, body.status)
    )


@router.get(
    "/sequences/{sequence_id}",
    summary="A sequence with its steps, each with who got it and who waits for it",
    response_model=SequenceDetail,
)
async def get_sequence(request: Request, _: Auth, sequence_id: Id) -> Response:
    return await read(request, lambda db: sequences.get_sequence(db, sequence_id))


@router.patch("/sequences/{sequence_id}", summary="Rename a sequence", response_model=SequenceDetail)
async def patch_sequence(request: Request, who: Auth, sequence_id: Id, body: SequencePatch) -> Response:
    name = text(body.name, "name") if body.name is not None else None
    return await write(request, who, 200, lambda db: sequences.update_sequence(db, sequence_id, name=name))


@router.delete(
    "/sequences/{sequence_id}",
    status_code=204,
    summary="Delete a sequence: its members leave, its queued emails are not sent",
)
async def delete_sequence(request: Request, who: Auth, sequence_id: Id) -> Response:
    return await write(request, who, 204, lambda db: sequences.delete_sequence(db, sequence_id))


@router.post(
    "/sequences/{sequence_id}/pause",
    summary="Hold the due steps (people still enter)",
    response_model=SequenceDetail,
)
async def pause_sequence(request: Request, who: Auth, sequence_id: Id) -> Response:
    return await write(
        request,
        who,
        200,
        lambda db: sequences.update_sequence(db, sequence_id, status=SequenceStatus.PAUSED),
    )


@router.post(
    "/sequences/{sequence_id}/resume", summary="Send the held steps and go on", response_model=SequenceDetail
)
async def resume_sequence(request: Request, who: Auth, sequence_id: Id) -> Response:
    return await write(
        request,
        who,
        200,
        lambda db: sequences.update_sequence(db, sequence_id, status=SequenceStatus.ACTIVE),
    )


@router.post(
    "/sequences/{sequence_id}/enroll",
    summary="The list's people already confirmed enter the sequence",
    response_model=Entered,
)
async def enroll(request: Request, who: Auth, sequence_id: Id) -> Response:
    return await write(request, who, 200, lambda db: sequences.enroll(db, sequence_id))


@router.post(
    "/sequences/{sequence_id}/steps",
    status_code=201,
    summary="Add a step after the last (Markdown, or HTML and text)",
    response_model=StepOut,
)
async def post_step(request: Request, who: Auth, sequence_id: Id, body: StepIn) -> Response:
    step = _step(request, **body.model_dump())
    return await write(request, who, 201, lambda db: sequences.add_step(db, sequence_id, step))


@router.get("/sequences/{sequence_id}/steps", summary="The steps, in order", response_model=list[StepOut])
async def get_steps(request: Request, _: Auth, sequence_id: Id) -> Response:
    async def steps(db: Database) -> Any:
        return (await sequences.get_sequence(db, sequence_id))["steps"]

    return await read(request, steps)


@router.patch(
    "/sequences/{sequence_id}/steps/{step_id}",
    summary="Change what a step sends from now on, or its delay",
    response_model=StepOut,
)
async def patch_step(
    request: Request, who: Auth, sequence_id: Id, step_id: StepId, body: StepPatch
) -> Response:
    async def change(db: Database) -> dict[str, Any]:
        current = await sequences.get_step(db, sequence_id, step_id)
        # A field sent as null is a field not sent: what it was stays.
        given = body.model_dump(exclude_unset=True, exclude_none=True)
        content: dict[str, Any] = {key: given.get(key) for key in ("markdown", "html", "text")}
        if "markdown" not in given and not {"html", "text"} & given.keys():
            # The content stays as it was written: Markdown, or HTML and text.
            content = (
                {"markdown": current["markdown"]}
                if current["markdown"] is not None
                else {"markdown": None, "html": current["html"], "text": current["text"]}
            )
        elif "markdown" not in given:
            content = {"markdown": None, "html": given.get("html"), "text": given.get("text")}
        step = _step(
            request,
            delay_seconds=given.get("delay_seconds", current["delay_seconds"]),
            subject=given.get("subject", current["subject"]),
            **content,
        )
        return await sequences.update_step(db, sequence_id, step_id, step)

    return await write(request, who, 200, change)


@router.delete(
    "/sequences/{sequence_id}/steps/{step_id}",
    status_code=204,
    summary="Delete a step: who got it moves on to the next, its queued emails are not sent",
)
async def delete_step(request: Request, who: Auth, sequence_id: Id, step_id: StepId) -> Response:
    return await write(request, who, 204, lambda db: sequences.delete_step(db, sequence_id, step_id))


@router.get(
    "/sequences/{sequence_id}/members",
    summary="Who is where: `step=N` those whose last step sent is N (0: waiting for the first)",
    response_model=Page[MemberOut],
)
async def get_members(
    request: Request,
    _: Auth,
    sequence_id: Id,
    page: Paging,
    step: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    status: MemberStatus | None = None,
) -> Response:
    return await read_page(
        request,
        page,
        lambda db, after: sequences.members(
            db, sequence_id, step=step, status=status, after=after, limit=page.limit
        ),
    )
