"""Sequences: the welcome emails and drip steps of a list, written with the issue's compose and preview, and
who is where in them. Every change is a call to the service the API calls (services/automations/sequences)."""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from newsletter.domain.subscriber import InvalidInput, SubscriberName
from newsletter.domain.vocabulary import MemberStatus, SequenceStatus
from newsletter.services.audience import lists
from newsletter.services.automations import sequences
from newsletter.services.automations.sequences import StepContent
from newsletter.services.errors import Invalid
from newsletter.services.sending.compose import Preview
from newsletter.services.sending.issues import IssueContent
from newsletter.web.admin.core import Admin, SignedIn
from newsletter.web.admin.issues import PREVIEW_HEADERS
from newsletter.web.api.common import Id
from newsletter.web.state import context

router = APIRouter()

PAGE_SIZE = 50
MAX_NAME = 200
# What a delay is typed in, the largest first: a saved delay is shown in the largest unit that holds it whole.
UNITS = {"days": 86400, "hours": 3600, "minutes": 60}
# Only for a delay set through the API that is no whole number of minutes, so that saving keeps it.
SECONDS = "seconds"


def delay_fields(seconds: int) -> tuple[int, str]:
    """A delay as the step form shows it: a number and a unit."""
    for unit, size in UNITS.items():
        if seconds % size == 0:
            return seconds // size, unit
    return seconds, SECONDS


def delay_words(seconds: int, position: int) -> str:
    """When a step goes out, as people say it: "at once", "2 days after the step before"."""
    since = "entering the sequence" if position == 1 else "the step before"
    if seconds == 0:
        return f"at once after {since}" if position > 1 else "at once, on entering"
    number, unit = delay_fields(seconds)
    return f"{number} {unit.removesuffix('s') if number == 1 else unit} after {since}"


def _delay_seconds(number: str, unit: str) -> int:
    """The delay typed; its range is the service's to check (StepContent.parse)."""
    size = 1 if unit == SECONDS else UNITS.get(unit)
    if size is None:
        raise Invalid("delay: the unit is minutes, hours or days")
    try:
        return int(number.strip()) * size
    except ValueError:
        raise Invalid("delay: give a whole number of minutes, hours or days") from None


def _name(raw: str) -> str:
    try:
        name = SubscriberName.parse(raw).value
    except InvalidInput as error:
        raise Invalid(f"name: {error}") from None
    if not 1 <= len(name) <= MAX_NAME:
        raise Invalid(f"name: a sequence needs a name of 1 to {MAX_NAME} characters")
    return name


def _draft(form: dict[str, str]) -> dict[str, str]:
    """The step form as it was posted: checked by `_step`, shown again as typed when refused."""
    fields = ("delay", "unit", "subject", "markdown", "html", "text")
    draft = {key: form.get(key, "") for key in fields}
    draft["format"] = "html" if form.get("format") == "html" else "markdown"
    return draft


def _saved_draft(step: dict[str, Any]) -> dict[str, str]:
    number, unit = delay_fields(step["delay_seconds"])
    written_as_markdown = step["markdown"] is not None
    return {
        "delay": str(number),
        "unit": unit,
        "subject": step["subject"],
        "markdown": step["markdown"] or "",
        "html": "" if written_as_markdown else step["html"],
        "text": "" if written_as_markdown else step["text"],
        "format": "markdown" if written_as_markdown else "html",
    }


def _saved(step: dict[str, Any]) -> StepContent:
    """A saved step as it is sent (checked when it was saved)."""
    content = IssueContent(step["subject"], step["markdown"], step["html"], step["text"])
    return StepContent(step["delay_seconds"], content)


def _step(admin: Admin, draft: dict[str, str], *, delay_seconds: int | None = None) -> StepContent:
    """Markdown, or (a step written so through the API) HTML and text; checked to render as the API checks."""
    content: dict[str, str | None] = (
        {"markdown": None, "html": draft["html"], "text": draft["text"]}
        if draft["format"] == "html"
        else {"markdown": draft["markdown"]}
    )
    return StepContent.parse(
        context(admin.request).composer,
        delay_seconds=_delay_seconds(draft["delay"], draft["unit"])
        if delay_seconds is None
        else delay_seconds,
        subject=draft["subject"],
        **content,
    )


async def _list_of(admin: Admin, slug: str) -> dict[str, Any]:
    """The sequence's list with its counts: its name, and how many confirmed people an enroll concerns."""
    [list_id] = [item["id"] for item in await lists.list_names(admin.db) if item["slug"] == slug]
    return await lists.get_list(admin.db, list_id)


def _preview(admin: Admin, step: StepContent, to_list: dict[str, Any]) -> Preview:
    return sequences.preview(
        context(admin.request).composer, step, list_slug=to_list["slug"], list_name=to_list["name"]
    )


# Sequences


async def _sequences_page(
    admin: Admin, *, status: int = 200, error: str | None = None, values: dict[str, str] | None = None
) -> Response:
    return admin.render(
        "sequences",
        status,
        sequences=await sequences.sequences(admin.db),
        lists=await lists.list_names(admin.db),
        error=error,
        values=values or {},
    )


@router.get("/admin/sequences", response_class=HTMLResponse)
async def sequences_page(admin: SignedIn) -> Response:
    return await _sequences_page(admin)


@router.post("/admin/sequences", response_class=HTMLResponse)
async def create_sequence(admin: SignedIn) -> Response:
    form = await admin.form()
    try:
        created = await sequences.create_sequence(admin.db, form.get("list", ""), _name(form.get("name", "")))
    except Invalid as error:
        return await _sequences_page(admin, status=422, error=str(error), values=form)
    return admin.redirect(
        f"/admin/sequences/{created['id']}", f"The sequence {created['name']} is created: add its first step."
    )


async def _sequence_page(
    admin: Admin,
    sequence_id: int,
    *,
    step: str = "",
    status: str = "",
    after: int | None = None,
    code: int = 200,
    error: str | None = None,
    name: str | None = None,
) -> Response:
    sequence = await sequences.get_sequence(admin.db, sequence_id)
    positions = range(len(sequence["steps"]) + 1)
    step = step if step in {str(position) for position in positions} else ""
    status = status if status in set(MemberStatus) else ""
    found = await sequences.members(
        admin.db,
        sequence_id,
        step=int(step) if step else None,
        status=MemberStatus(status) if status else None,
        after=after,
        limit=PAGE_SIZE,
    )
    return admin.render(
        "sequence",
        code,
        sequence=sequence,
        list=await _list_of(admin, sequence["list"]),
        when={item["id"]: delay_words(item["delay_seconds"], item["position"]) for item in sequence["steps"]},
        members=found,
        filters={"step": step, "status": status},
        statuses=tuple(MemberStatus),
        after=after,
        next_after=found[-1]["id"] if len(found) == PAGE_SIZE else None,
        error=error,
        name=sequence["name"] if name is None else name,
    )


@router.get("/admin/sequences/{sequence_id}", response_class=HTMLResponse)
async def sequence_page(
    admin: SignedIn,
    sequence_id: Id,
    step: Annotated[str, Query(max_length=10)] = "",
    status: Annotated[str, Query(max_length=20)] = "",
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> Response:
    return await _sequence_page(admin, sequence_id, step=step, status=status, after=after)


@router.post("/admin/sequences/{sequence_id}/rename", response_class=HTMLResponse)
async def rename_sequence(admin: SignedIn, sequence_id: Id) -> Response:
    typed = (await admin.form()).get("name", "")
    try:
        renamed = await sequences.update_sequence(admin.db, sequence_id, name=_name(typed))
    except Invalid as error:
        return await _sequence_page(admin, sequence_id, code=422, error=str(error), name=typed)
    return admin.redirect(f"/admin/sequences/{sequence_id}", f"The sequence is renamed {renamed['name']}.")


async def _set_status(admin: Admin, sequence_id: int, status: SequenceStatus, notice: str) -> Response:
    await sequences.update_sequence(admin.db, sequence_id, status=status)
    return admin.redirect(f"/admin/sequences/{sequence_id}", notice)


@router.post("/admin/sequences/{sequence_id}/pause")
async def pause_sequence(admin: SignedIn, sequence_id: Id) -> Response:
    notice = "Paused: due steps wait until it is resumed; people still enter."
    return await _set_status(admin, sequence_id, SequenceStatus.PAUSED, notice)


@router.post("/admin/sequences/{sequence_id}/resume")
async def resume_sequence(admin: SignedIn, sequence_id: Id) -> Response:
    notice = "Resumed: the steps that came due while it was paused go out now."
    return await _set_status(admin, sequence_id, SequenceStatus.ACTIVE, notice)


@router.post("/admin/sequences/{sequence_id}/enroll")
async def enroll(admin: SignedIn, sequence_id: Id) -> Response:
    if (await admin.form()).get("confirm") != "yes":
        return admin.redirect(
            f"/admin/sequences/{sequence_id}", "Tick the box to confirm the enrollment.", error=True
        )
    entered = (await sequences.enroll(admin.db, sequence_id))["entered"]
    notice = (
        f"{entered:,} {'person' if entered == 1 else 'people'} entered the sequence."
        if entered
        else "Nobody entered: every confirmed person of the list who may be mailed is a member already."
    )
    return admin.redirect(f"/admin/sequences/{sequence_id}", notice)


@router.post("/admin/sequences/{sequence_id}/delete")
async def delete_sequence(admin: SignedIn, sequence_id: Id) -> Response:
    if (await admin.form()).get("confirm") != "yes":
        return admin.redirect(
            f"/admin/sequences/{sequence_id}", "Tick the box to confirm the deletion.", error=True
        )
    sequence = await sequences.get_sequence(admin.db, sequence_id)
    await sequences.delete_sequence(admin.db, sequence_id)
    return admin.redirect("/admin/sequences", f"The sequence {sequence['name']} is deleted.")


# Steps


async def _step_page(
    admin: Admin,
    sequence_id: int,
    step_id: int | None,
    *,
    code: int = 200,
    error: str | None = None,
    draft: dict[str, str] | None = None,
) -> Response:
    """The step form: a new step (`step_id` None) or a saved one, with the preview of what is saved."""
    sequence = await sequences.get_sequence(admin.db, sequence_id)
    step = await sequences.get_step(admin.db, sequence_id, step_id) if step_id is not None else None
    to_list = await _list_of(admin, sequence["list"])
    if draft is None:
        draft = _saved_draft(step) if step else {"delay": "0", "unit": "days", "format": "markdown"}
    return admin.render(
        "step",
        code,
        sequence=sequence,
        step=step,
        when=delay_words(step["delay_seconds"], step["position"]) if step else None,
        list=to_list,
        draft=draft,
        units=(*UNITS, SECONDS) if draft.get("unit") == SECONDS else tuple(UNITS),
        preview=_preview(admin, _saved(step), to_list) if step else None,
        error=error,
    )


@router.get("/admin/sequences/{sequence_id}/steps/new", response_class=HTMLResponse)
async def new_step_page(admin: SignedIn, sequence_id: Id) -> Response:
    return await _step_page(admin, sequence_id, None)


def _step_url(sequence_id: int, step_id: int) -> str:
    return f"/admin/sequences/{sequence_id}/steps/{step_id}"


@router.post("/admin/sequences/{sequence_id}/steps", response_class=HTMLResponse)
async def add_step(admin: SignedIn, sequence_id: Id) -> Response:
    form = await admin.form()
    draft = _draft(form)
    try:
        added = await sequences.add_step(admin.db, sequence_id, _step(admin, draft))
    except Invalid as error:
        return await _step_page(admin, sequence_id, None, code=422, error=str(error), draft=draft)
    # The Preview button saves too and lands on the preview, as the issue form's does.
    preview = form.get("action") == "preview"
    target = (
        f"{_step_url(sequence_id, added['id'])}#preview"
        if preview
        else f"/admin/sequences/{sequence_id}#steps"
    )
    return admin.redirect(target, f"Step {added['position']} is added.")


@router.get("/admin/sequences/{sequence_id}/steps/{step_id}", response_class=HTMLResponse)
async def step_page(admin: SignedIn, sequence_id: Id, step_id: Id) -> Response:
    return await _step_page(admin, sequence_id, step_id)


@router.post("/admin/sequences/{sequence_id}/steps/{step_id}", response_class=HTMLResponse)
async def save_step(admin: SignedIn, sequence_id: Id, step_id: Id) -> Response:
    form = await admin.form()
    draft = _draft(form)
    try:
        saved = await sequences.update_step(admin.db, sequence_id, step_id, _step(admin, draft))
    except Invalid as error:
        return await _step_page(admin, sequence_id, step_id, code=422, error=str(error), draft=draft)
    target = _step_url(sequence_id, step_id) + ("#preview" if form.get("action") == "preview" else "")
    return admin.redirect(target, f"Step {saved['position']} is saved; it is sent so from now on.")


@router.post("/admin/sequences/{sequence_id}/steps/{step_id}/delete")
async def delete_step(admin: SignedIn, sequence_id: Id, step_id: Id) -> Response:
    if (await admin.form()).get("confirm") != "yes":
        return admin.redirect(
            _step_url(sequence_id, step_id), "Tick the box to confirm the deletion.", error=True
        )
    step = await sequences.get_step(admin.db, sequence_id, step_id)
    await sequences.delete_step(admin.db, sequence_id, step_id)
    return admin.redirect(f"/admin/sequences/{sequence_id}#steps", f"Step {step['position']} is deleted.")


@router.get("/admin/sequences/{sequence_id}/steps/{step_id}/preview.html", response_class=HTMLResponse)
async def preview_frame(admin: SignedIn, sequence_id: Id, step_id: Id) -> Response:
    sequence = await sequences.get_sequence(admin.db, sequence_id)
    step = await sequences.get_step(admin.db, sequence_id, step_id)
    preview = _preview(admin, _saved(step), await _list_of(admin, sequence["list"]))
    return HTMLResponse(preview.html, headers=PREVIEW_HEADERS)


async def _unsaved_preview(admin: Admin, sequence_id: int) -> Preview | str:
    """What the step form holds, not yet saved, as a member of the sequence's list receives it."""
    sequence = await sequences.get_sequence(admin.db, sequence_id)
    draft = _draft(await admin.form())
    draft["subject"] = draft["subject"] or "(no subject)"
    try:
        content = _step(admin, draft, delay_seconds=0)  # the delay is no part of the email
    except Invalid as error:
        return str(error)
    return _preview(admin, content, await _list_of(admin, sequence["list"]))


@router.post("/admin/sequences/{sequence_id}/preview.html", response_class=HTMLResponse)
async def live_preview_frame(admin: SignedIn, sequence_id: Id) -> Response:
    """The step form's live preview posts what is typed into the frame (static/admin.js)."""
    preview = await _unsaved_preview(admin, sequence_id)
    if isinstance(preview, str):
        return HTMLResponse(f"<p>{html.escape(preview)}</p>", status_code=422, headers=PREVIEW_HEADERS)
    return HTMLResponse(preview.html, headers=PREVIEW_HEADERS)


@router.post("/admin/sequences/{sequence_id}/preview.json")
async def live_preview_text(admin: SignedIn, sequence_id: Id) -> Response:
    preview = await _unsaved_preview(admin, sequence_id)
    if isinstance(preview, str):
        return JSONResponse({"error": preview}, status_code=422, headers={"Cache-Control": "no-store"})
    return JSONResponse(
        {"subject": preview.subject, "text": preview.text}, headers={"Cache-Control": "no-store"}
    )
