"""Issues: compose with a preview of exactly what is sent, test, send or schedule, steer, and the ledger."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from newsletter.domain.subscriber import InvalidInput, SubscriberEmail
from newsletter.services import audience, emails, issues, overview
from newsletter.services.errors import Conflict, Invalid, NotFound
from newsletter.web.admin.core import Admin, SignedIn
from newsletter.web.api import Id

router = APIRouter()

PAGE_SIZE = 50
DELIVERY_STATUSES = (
    "queued",
    "sending",
    "sent",
    "failed",
    "bounced",
    "complained",
    "suppressed",
    "cancelled",
)
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


def render_preview(admin: Admin, subject: str, html: str, text: str) -> emails.Preview:
    """The email as the signed-in user would receive it, built by the worker's own rendering path."""
    settings = admin.settings
    template = emails.newsletter_template(subject, html, text, sender=settings.sender_address)
    domain = settings.sender_address.domain or "localhost"
    return emails.preview(
        template,
        recipient=admin.user.email,
        list_id=f"Preview <preview.{domain}>",
        unsubscribe_url=f"{settings.base_url}/unsubscribe/preview",
    )


async def _suppressed_failures(conn: asyncpg.Connection, issue: dict[str, Any]) -> int:
    return await overview.failed_and_suppressed(conn, issue["id"]) if issue["counts"]["failed"] else 0


def _not_found(admin: Admin, issue_id: int) -> Response:
    return admin.render("error", 404, title="Not found", message=f"There is no issue {issue_id}.")


async def _issue_page(
    admin: Admin,
    issue_id: int,
    *,
    status: int = 200,
    error: str | None = None,
    draft: dict[str, Any] | None = None,
) -> Response:
    async with admin.pool.acquire() as conn:
        try:
            issue = await issues.get_issue(conn, issue_id)
        except NotFound:
            return _not_found(admin, issue_id)
        lists = await audience.list_names(conn)
        suppressed_failures = await _suppressed_failures(conn, issue)
    return admin.render(
        "issue",
        status,
        issue={**issue, "progress": overview.progress(issue)},
        suppressed_failures=suppressed_failures,
        draft=draft or {"subject": issue["subject"], "markdown": issue["markdown"], "lists": issue["lists"]},
        preview=render_preview(admin, issue["subject"], issue["html"], issue["text"]),
        lists=lists,
        error=error,
    )


@router.get("/admin/issues", response_class=HTMLResponse)
async def issues_page(
    admin: SignedIn, before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None
) -> Response:
    async with admin.pool.acquire() as conn:
        found = await issues.list_issues(conn, before=before, status=None, limit=PAGE_SIZE)
        lists = await audience.list_names(conn)
    next_before = found[-1]["id"] if len(found) == PAGE_SIZE else None
    return admin.render(
        "issues",
        issues=[{**issue, "progress": overview.progress(issue)} for issue in found],
        lists=lists,
        next_before=next_before,
        error=None,
        values={},
    )


async def _content(admin: Admin) -> tuple[issues.IssueContent, list[str]]:
    form = await admin.form()
    posted = await admin.request.form()
    lists = [value for value in posted.getlist("lists") if isinstance(value, str)]
    return issues.IssueContent.parse(form.get("subject", ""), form.get("markdown", ""), None, None), lists


@router.post("/admin/issues", response_class=HTMLResponse)
async def create_issue(admin: SignedIn) -> Response:
    try:
        content, lists = await _content(admin)
        async with admin.pool.acquire() as conn, conn.transaction():
            created = await issues.create_issue(conn, content, lists)
    except Invalid as error:
        async with admin.pool.acquire() as conn:
            found = await issues.list_issues(conn, before=None, status=None, limit=PAGE_SIZE)
            names = await audience.list_names(conn)
        return admin.render(
            "issues",
            422,
            issues=[{**issue, "progress": overview.progress(issue)} for issue in found],
            lists=names,
            next_before=None,
            error=str(error),
            values=await admin.form(),
        )
    return admin.redirect(f"/admin/issues/{created['id']}", "The draft is saved.")


@router.get("/admin/issues/{issue_id}", response_class=HTMLResponse)
async def issue_page(admin: SignedIn, issue_id: Id) -> Response:
    return await _issue_page(admin, issue_id)


@router.post("/admin/issues/{issue_id}", response_class=HTMLResponse)
async def save_issue(admin: SignedIn, issue_id: Id) -> Response:
    """Save the draft; the Preview button saves too and lands on the preview."""
    form = await admin.form()
    try:
        content, lists = await _content(admin)
        async with admin.pool.acquire() as conn, conn.transaction():
            await issues.update_issue(conn, issue_id, content, lists)
    except NotFound:
        return _not_found(admin, issue_id)
    except (Invalid, Conflict) as error:
        posted = await admin.request.form()
        draft = {
            "subject": form.get("subject", ""),
            "markdown": form.get("markdown", ""),
            "lists": [value for value in posted.getlist("lists") if isinstance(value, str)],
        }
        return await _issue_page(admin, issue_id, status=422, error=str(error), draft=draft)
    anchor = "#preview" if form.get("action") == "preview" else ""
    return admin.redirect(f"/admin/issues/{issue_id}{anchor}", "The draft is saved.")


@router.get("/admin/issues/{issue_id}/preview.html", response_class=HTMLResponse)
async def preview_frame(admin: SignedIn, issue_id: Id) -> Response:
    async with admin.pool.acquire() as conn:
        try:
            issue = await issues.get_issue(conn, issue_id)
        except NotFound:
            return _not_found(admin, issue_id)
    preview = render_preview(admin, issue["subject"], issue["html"], issue["text"])
    return HTMLResponse(preview.html, headers=PREVIEW_HEADERS)


async def _unsaved_preview(admin: Admin) -> emails.Preview | str:
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


async def _steer(
    admin: Admin,
    issue_id: int,
    action: Callable[[asyncpg.Connection], Awaitable[Any]],
    notice: str,
) -> Response:
    try:
        async with admin.pool.acquire() as conn, conn.transaction():
            await action(conn)
    except NotFound:
        return _not_found(admin, issue_id)
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
        lambda conn: issues.test_send(conn, issue_id, addresses, request_id),
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
    return await _steer(
        admin, issue_id, lambda conn: issues.send_issue(conn, issue_id, send_at, request_id), notice
    )


@router.post("/admin/issues/{issue_id}/pause")
async def pause_issue(admin: SignedIn, issue_id: Id) -> Response:
    return await _steer(admin, issue_id, lambda conn: issues.pause_issue(conn, issue_id), "Paused.")


@router.post("/admin/issues/{issue_id}/resume")
async def resume_issue(admin: SignedIn, issue_id: Id) -> Response:
    return await _steer(admin, issue_id, lambda conn: issues.resume_issue(conn, issue_id), "Resumed.")


@router.post("/admin/issues/{issue_id}/cancel")
async def cancel_issue(admin: SignedIn, issue_id: Id) -> Response:
    return await _steer(admin, issue_id, lambda conn: issues.cancel_issue(conn, issue_id), "Cancelled.")


@router.post("/admin/issues/{issue_id}/retry-failed")
async def retry_failed(admin: SignedIn, issue_id: Id) -> Response:
    retried: list[int] = []
    suppressed: list[int] = []

    async def retry(conn: asyncpg.Connection) -> None:
        suppressed.append(await overview.failed_and_suppressed(conn, issue_id))
        retried.append(await issues.retry_failed(conn, issue_id))

    response = await _steer(admin, issue_id, retry, "")
    if not retried:
        return response
    notice = f"{retried[0]} failed deliver{'ies' if retried[0] != 1 else 'y'} queued again."
    if suppressed[0]:
        notice += (
            f" {suppressed[0]} of them {'goes' if suppressed[0] == 1 else 'go'} to a suppressed address and "
            "will be marked suppressed, not sent: lift a suppression before retrying."
        )
    return admin.redirect(f"/admin/issues/{issue_id}", notice, error=bool(suppressed[0]))


@router.get("/admin/issues/{issue_id}/progress.json")
async def progress(admin: SignedIn, issue_id: Id) -> Response:
    async with admin.pool.acquire() as conn:
        try:
            issue = await issues.get_issue(conn, issue_id)
        except NotFound:
            return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse(
        {"status": issue["status"], "progress": overview.progress(issue), "counts": issue["counts"]},
        headers={"Cache-Control": "no-store"},
    )


@router.get("/admin/issues/{issue_id}/deliveries", response_class=HTMLResponse)
async def deliveries_page(
    admin: SignedIn,
    issue_id: Id,
    status: str = "",
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> Response:
    status = status if status in DELIVERY_STATUSES else ""
    async with admin.pool.acquire() as conn:
        try:
            issue = await issues.get_issue(conn, issue_id)
            rows = await issues.deliveries(
                conn, issue_id, status=status or None, after=after, limit=PAGE_SIZE
            )
        except NotFound:
            return _not_found(admin, issue_id)
        failed = [row["recipient"] for row in rows if row["status"] == "failed"]
        suppressed = await overview.suppressed_among(conn, failed) if failed else {}
        suppressed_failures = await _suppressed_failures(conn, issue)
    return admin.render(
        "deliveries",
        issue={**issue, "progress": overview.progress(issue)},
        suppressed_failures=suppressed_failures,
        suppressed=suppressed,
        deliveries=rows,
        selected=status,
        statuses=DELIVERY_STATUSES,
        after=after,
        next_after=rows[-1]["id"] if len(rows) == PAGE_SIZE else None,
    )
