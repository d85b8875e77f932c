"""Issues: compose with a preview of exactly what is sent, test, send or schedule, steer, and the ledger."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from newsletter.domain.subscriber import InvalidInput, SubscriberEmail
from newsletter.domain.vocabulary import DeliveryStatus
from newsletter.services.audience import lists, segments
from newsletter.services.compliance import suppressions
from newsletter.services.errors import Conflict, Invalid, NotFound
from newsletter.services.sending import compose, issues
from newsletter.web.admin.core import Admin, SignedIn
from newsletter.web.api.common import Id
from newsletter.web.state import context

router = APIRouter()

PAGE_SIZE = 50
# The preview frame shows an email: its inline styles, its images, and nothing that runs.
PREVIEW_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; frame-ancestors 'self'; "
    "base-uri 'none'; form-action 'none'; sandbox"
)
PREVIEW_HEADERS = {
    "Content-Security-Policy": PREVIEW_POLICY,
    "X-Frame-Options": "SAMEORIGIN",
    "Cache-Control": "no-store",
}


def render_preview(admin: Admin, subject: str, html: str, text: str) -> compose.Preview:
    """The email as the signed-in user would receive it, made by the composer the worker sends with."""
    return context(admin.request).composer.preview(
        subject, html, text, recipient=admin.user.email, to_list=None
    )


async def _suppressed_failures(admin: Admin, issue: dict[str, Any]) -> int:
    return await issues.failed_and_suppressed(admin.db, issue["id"]) if issue["counts"]["failed"] else 0


async def _issue_page(
    admin: Admin,
    issue_id: int,
    *,
    status: int = 200,
    error: str | None = None,
    draft: dict[str, Any] | None = None,
) -> Response:
    issue = await issues.get_issue(admin.db, issue_id)
    return admin.render(
        "issue",
        status,
        issue=issue,
        suppressed_failures=await _suppressed_failures(admin, issue),
        draft=draft
        or {
            "subject": issue["subject"],
            "markdown": issue["markdown"],
            "lists": issue["lists"],
            "segment": issue["segment"],
        },
        preview=render_preview(admin, issue["subject"], issue["html"], issue["text"]),
        lists=await lists.list_names(admin.db),
        segments=await segments.all_segments(admin.db),
        error=error,
    )


async def _issues_page(
    admin: Admin,
    *,
    before: int | None,
    status: int = 200,
    error: str | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    found = await issues.list_issues(admin.db, before=before, status=None, limit=PAGE_SIZE)
    return admin.render(
        "issues",
        status,
        issues=found,
        lists=await lists.list_names(admin.db),
        next_before=found[-1]["id"] if len(found) == PAGE_SIZE else None,
        error=error,
        values=values or {},
    )


@router.get("/admin/issues", response_class=HTMLResponse)
async def issues_page(
    admin: SignedIn, before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None
) -> Response:
    return await _issues_page(admin, before=before)


async def _content(admin: Admin) -> tuple[issues.IssueContent, list[str]]:
    form = await admin.form()
    return issues.IssueContent.parse(
        form.get("subject", ""), form.get("markdown", ""), None, None
    ), await _lists(admin)


async def _lists(admin: Admin) -> list[str]:
    posted = await admin.request.form()
    return [value for value in posted.getlist("lists") if isinstance(value, str)]


@router.post("/admin/issues", response_class=HTMLResponse)
async def create_issue(admin: SignedIn) -> Response:
    try:
        content, target = await _content(admin)
        created = await issues.create_issue(admin.db, content, target)
    except Invalid as error:
        return await _issues_page(admin, before=None, status=422, error=str(error), values=await admin.form())
    return admin.redirect(f"/admin/issues/{created['id']}", "The draft is saved.")


@router.get("/admin/issues/{issue_id}", response_class=HTMLResponse)
async def issue_page(admin: SignedIn, issue_id: Id) -> Response:
    return await _issue_page(admin, issue_id)


@router.post("/admin/issues/{issue_id}", response_class=HTMLResponse)
async def save_issue(admin: SignedIn, issue_id: Id) -> Response:
    """Save the draft; the Preview button saves too and lands on the preview."""
    form = await admin.form()
    segment = int(form["segment"]) if form.get("segment", "").isdecimal() else None
    try:
        content, target = await _content(admin)
        await issues.update_issue(admin.db, issue_id, content, target, segment)
    except (Invalid, Conflict) as error:
        draft = {
            "subject": form.get("subject", ""),
            "markdown": form.get("markdown", ""),
            "lists": await _lists(admin),
            "segment": segment,
        }
        return await _issue_page(admin, issue_id, status=422, error=str(error), draft=draft)
    anchor = "#preview" if form.get("action") == "preview" else ""
    return admin.redirect(f"/admin/issues/{issue_id}{anchor}", "The draft is saved.")


@router.get("/admin/issues/{issue_id}/preview.html", response_class=HTMLResponse)
async def preview_frame(admin: SignedIn, issue_id: Id) -> Response:
    issue = await issues.get_issue(admin.db, issue_id)
    preview = render_preview(admin, issue["subject"], issue["html"], issue["text"])
    return HTMLResponse(preview.html, headers=PREVIEW_HEADERS)


async def _unsaved_preview(admin: Admin) -> compose.Preview | str:
    form = await admin.form()
    try:
        content = issues.IssueContent.parse(
            form.get("subject", "") or "(no subject)", form.get("markdown", ""), None, None
        )
    except Invalid as error:
        return str(error)
    return render_preview(admin, content.subject, content.html, content.text)


@router.post("/admin/preview.html", response_class=HTMLResponse)
async def live_preview_frame(admin: SignedIn) -> Response:
    """What the compose form holds, not yet saved: the live preview posts the form into the frame."""
    preview = await _unsaved_preview(admin)
    if isinstance(preview, str):
        return HTMLResponse(f"<p>{preview}</p>", status_code=422, headers=PREVIEW_HEADERS)
    return HTMLResponse(preview.html, headers=PREVIEW_HEADERS)


@router.post("/admin/preview.json")
async def live_preview_text(admin: SignedIn) -> Response:
    preview = await _unsaved_preview(admin)
    if isinstance(preview, str):
        return JSONResponse({"error": preview}, status_code=422, headers={"Cache-Control": "no-store"})
    return JSONResponse(
        {"subject": preview.subject, "text": preview.text}, headers={"Cache-Control": "no-store"}
    )


async def _steer(admin: Admin, issue_id: int, action: Awaitable[Any], notice: str) -> Response:
    try:
        await action
    except (Invalid, Conflict) as error:
        return admin.redirect(f"/admin/issues/{issue_id}", str(error), error=True)
    return admin.redirect(f"/admin/issues/{issue_id}", notice)


@router.post("/admin/issues/{issue_id}/test")
async def test_send(admin: SignedIn, issue_id: Id) -> Response:
    form = await admin.form()
    raw = [part for part in form.get("addresses", "").replace(",", " ").split() if part]
    try:
        if not 1 <= len(raw) <= 20:
            raise InvalidInput("Give one to twenty addresses.")
        addresses = [SubscriberEmail.parse(address).value for address in raw]
    except InvalidInput as error:
        return admin.redirect(f"/admin/issues/{issue_id}", str(error), error=True)
    request_id = admin.request.state.request_id
    return await _steer(
        admin,
        issue_id,
        issues.test_send(admin.db, issue_id, addresses, request_id),
        f"A test copy is on its way to {', '.join(addresses)}.",
    )


def _send_at(raw: str) -> datetime | None:
    """A `datetime-local` value, read as UTC; empty means now."""
    if not raw.strip():
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidInput("The time to send is not a date and time (YYYY-MM-DD HH:MM).") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@router.post("/admin/issues/{issue_id}/send")
async def send_issue(admin: SignedIn, issue_id: Id) -> Response:
    form = await admin.form()
    try:
        send_at = _send_at(form.get("send_at", "")) if form.get("when") == "later" else None
    except InvalidInput as error:
        return admin.redirect(f"/admin/issues/{issue_id}", str(error), error=True)
    request_id = admin.request.state.request_id
    notice = f"Scheduled for {send_at:%Y-%m-%d %H:%M} UTC." if send_at else "Sending."
    return await _steer(admin, issue_id, issues.send_issue(admin.db, issue_id, send_at, request_id), notice)


@router.post("/admin/issues/{issue_id}/pause")
async def pause_issue(admin: SignedIn, issue_id: Id) -> Response:
    return await _steer(admin, issue_id, issues.pause_issue(admin.db, issue_id), "Paused.")


@router.post("/admin/issues/{issue_id}/resume")
async def resume_issue(admin: SignedIn, issue_id: Id) -> Response:
    return await _steer(admin, issue_id, issues.resume_issue(admin.db, issue_id), "Resumed.")


@router.post("/admin/issues/{issue_id}/cancel")
async def cancel_issue(admin: SignedIn, issue_id: Id) -> Response:
    return await _steer(admin, issue_id, issues.cancel_issue(admin.db, issue_id), "Cancelled.")


@router.post("/admin/issues/{issue_id}/retry-failed")
async def retry_failed(admin: SignedIn, issue_id: Id) -> Response:
    try:
        outcome = await issues.retry_failed(admin.db, issue_id)
    except (Invalid, Conflict) as error:
        return admin.redirect(f"/admin/issues/{issue_id}", str(error), error=True)
    notice = f"{outcome.retried} failed deliver{'ies' if outcome.retried != 1 else 'y'} queued again."
    if outcome.suppressed:
        notice += (
            f" {outcome.suppressed} of them {'goes' if outcome.suppressed == 1 else 'go'} to a suppressed"
            " address and will be marked suppressed, not sent: lift a suppression before retrying."
        )
    return admin.redirect(f"/admin/issues/{issue_id}", notice, error=bool(outcome.suppressed))


@router.get("/admin/issues/{issue_id}/progress.json")
async def progress(admin: SignedIn, issue_id: Id) -> Response:
    try:
        issue = await issues.get_issue(admin.db, issue_id)
    except NotFound:
        return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse(
        {"status": issue["status"], "progress": issue["progress"], "counts": issue["counts"]},
        headers={"Cache-Control": "no-store"},
    )


@router.get("/admin/issues/{issue_id}/deliveries", response_class=HTMLResponse)
async def deliveries_page(
    admin: SignedIn,
    issue_id: Id,
    status: str = "",
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> Response:
    status = status if status in set(DeliveryStatus) else ""
    issue = await issues.get_issue(admin.db, issue_id)
    rows = await issues.deliveries(admin.db, issue_id, status=status or None, after=after, limit=PAGE_SIZE)
    failed = [row["recipient"] for row in rows if row["status"] == DeliveryStatus.FAILED]
    return admin.render(
        "deliveries",
        issue=issue,
        suppressed_failures=await _suppressed_failures(admin, issue),
        suppressed=await suppressions.suppressed_among(admin.db, failed) if failed else {},
        deliveries=rows,
        selected=status,
        statuses=tuple(DeliveryStatus),
        after=after,
        next_after=rows[-1]["id"] if len(rows) == PAGE_SIZE else None,
    )
