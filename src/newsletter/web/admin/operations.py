"""Suppressions and bounces, the effective settings, and CSV import and export."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile

from newsletter.domain.subscriber import InvalidInput, SubscriberEmail, SubscriberName
from newsletter.domain.vocabulary import SuppressionReason
from newsletter.services.audience import lists
from newsletter.services.audience.imports import EXPORT_STATUSES, import_csv
from newsletter.services.compliance import reports, suppressions
from newsletter.services.errors import Conflict, Invalid, NotFound
from newsletter.web.admin.core import Admin, SignedIn, safe_next
from newsletter.web.api.transfer import export_response

router = APIRouter()

PAGE_SIZE = 50
# The page's CSV upload takes the import's body limit, as the API's does.
IMPORT_PAGE_PATH = "/admin/import"
REASONS = tuple(SuppressionReason)


@router.get("/admin/suppressions", response_class=HTMLResponse)
async def suppressions_page(
    admin: SignedIn,
    q: Annotated[str, Query(max_length=200)] = "",
    reason: str = "",
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> Response:
    return await _suppressions(admin, q=q, reason=reason, after=after)


async def _suppressions(
    admin: Admin,
    *,
    q: str = "",
    reason: str = "",
    after: int | None = None,
    status: int = 200,
    error: str | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    reason = reason if reason in REASONS else ""
    rows = await suppressions.suppression_page(
        admin.db, after=after, reason=reason or None, search=q.strip() or None, limit=PAGE_SIZE
    )
    events = await reports.recent_reports(admin.db, before=None, limit=20)
    return admin.render(
        "suppressions",
        status,
        suppressions=rows,
        events=events,
        filters={"q": q, "reason": reason},
        reasons=REASONS,
        after=after,
        next_after=rows[-1]["id"] if len(rows) == PAGE_SIZE else None,
        error=error,
        values=values or {},
    )


@router.post("/admin/suppressions", response_class=HTMLResponse)
async def add_suppression(admin: SignedIn) -> Response:
    form = await admin.form()
    try:
        email = SubscriberEmail.parse(form.get("email", ""))
        detail = SubscriberName.parse(form.get("detail", "")).value[:1000]
    except InvalidInput as error:
        return await _suppressions(admin, status=422, error=str(error), values=form)
    await suppressions.suppress(admin.db, email, SuppressionReason.MANUAL, detail)
    return admin.redirect("/admin/suppressions", f"{email.value} is suppressed: nothing will be sent to it.")


@router.post("/admin/suppressions/remove")
async def remove_suppression(admin: SignedIn) -> Response:
    form = await admin.form()
    email = form.get("email", "")
    # Lifted from the page that showed it (the ledger of a send) or from this list.
    back = safe_next(form.get("next") or "/admin/suppressions")
    try:
        await suppressions.lift(admin.db, email)
    except NotFound:
        return admin.redirect(back, f"{email} is not suppressed.", error=True)
    return admin.redirect(back, f"{email} may be mailed again.")


@router.get("/admin/settings", response_class=HTMLResponse)
async def settings_page(admin: SignedIn) -> Response:
    return admin.render("settings", settings=admin.settings.redacted())


@router.get("/admin/import", response_class=HTMLResponse)
async def import_page(admin: SignedIn) -> Response:
    return await _import_page(admin)


async def _import_page(
    admin: Admin, *, status: int = 200, report: dict[str, object] | None = None, error: str | None = None
) -> Response:
    return admin.render(
        "import",
        status,
        lists=await lists.list_names(admin.db),
        statuses=EXPORT_STATUSES,
        report=report,
        error=error,
    )


@router.post(IMPORT_PAGE_PATH, response_class=HTMLResponse)
async def import_upload(admin: SignedIn) -> Response:
    form = await admin.request.form()
    upload = form.get("file")
    list_slug = form.get("list")
    if not isinstance(upload, UploadFile) or not upload.filename or not isinstance(list_slug, str):
        return await _import_page(admin, status=422, error="Choose a CSV file and a list.")
    try:
        report = await import_csv(
            admin.db, upload.file, list_slug=list_slug, enter_sequences=form.get("enter_sequences") == "on"
        )
    except (NotFound, Invalid, Conflict) as error:
        return await _import_page(admin, status=409 if isinstance(error, Conflict) else 422, error=str(error))
    return await _import_page(admin, report={**report.as_dict(), "file": upload.filename, "list": list_slug})


@router.get("/admin/export")
async def export(admin: SignedIn, list: str = "", status: str = "") -> Response:
    try:
        return await export_response(admin.db, list_slug=list or None, status=status or None)
    except (NotFound, Invalid) as error:
        return admin.redirect("/admin/import", str(error), error=True)
