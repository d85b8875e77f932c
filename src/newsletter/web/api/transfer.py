"""Bulk transfer over the admin API: subscribers imported from and exported to CSV.

Included before the subscribers routes (subscribers.py), whose `/subscribers/{subscriber_id}` would otherwise
take `/subscribers/export` for an id.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, BinaryIO, cast

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.types import Receive, Scope, Send

from newsletter.db.database import Database
from newsletter.domain.subscriber import InvalidInput, ListSlug
from newsletter.domain.vocabulary import SubscriberStatus, SubscriptionStatus
from newsletter.services.audience import imports
from newsletter.web.api.common import PREFIX, ApiError, Auth, write
from newsletter.web.api.models import ImportReportOut
from newsletter.web.state import context

IMPORT_PATH = f"{PREFIX}/subscribers/import"
_CSV_TYPES = ("text/csv", "application/csv", "text/plain", "application/octet-stream")
_SPOOL_BYTES = 1 << 20

router = APIRouter(prefix=PREFIX, tags=["subscribers"])

_IMPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A CSV file: a header line naming an `email` column, optionally `name` and "
        "`attributes` (a JSON object); other columns are ignored. UTF-8, a byte order mark is fine.",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


@router.post(
    "/subscribers/import",
    summary="Import subscribers from CSV into a list, as confirmed; a report names every rejected row",
    openapi_extra=_IMPORT_BODY,
    response_model=ImportReportOut,
)
async def import_subscribers(
    request: Request,
    who: Auth,
    list: Annotated[str, Query(max_length=63)] = "default",
    enter_sequences: Annotated[
        bool, Query(description="The people it confirms enter the list's sequences.")
    ] = False,
) -> Response:
    media_type = request.headers.get("content-type", "text/csv").split(";")[0].strip().lower()
    if media_type != "multipart/form-data" and media_type not in _CSV_TYPES:
        raise ApiError(
            415,
            "Unsupported media type",
            "Send the CSV as text/csv, or as multipart/form-data in a 'file' field.",
        )

    async def run(source: BinaryIO) -> Response:
        # The Idempotency-Key covers the file's content (not the multipart boundary, new in every request)
        # and the list as found.
        digest = await asyncio.to_thread(_digest, source)
        # (and whether it enters sequences: only when it does, so that keys stored before keep matching).
        flag = b"enter_sequences\n" if enter_sequences else b""
        content = b"import\n" + (_slug(list) or list).encode() + b"\n" + flag + digest

        async def change(db: Database) -> dict[str, Any]:
            report = await imports.import_csv(db, source, list_slug=list, enter_sequences=enter_sequences)
            return report.as_dict()

        return await write(request, who, 200, change, content=content)

    if media_type == "multipart/form-data":
        async with request.form(max_fields=10) as form:  # uploads are spooled to disk by Starlette
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(422, "Invalid request", "file: a multipart field named 'file' holding the CSV")
            return await run(upload.file)
    # The body is spooled to disk past the first megabyte: memory stays flat whatever the size of the file.
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
        return await run(cast(BinaryIO, spool))


@router.get(
    "/subscribers/export",
    summary="Subscribers as CSV, one row per subscription, streamed",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def export_subscribers(
    request: Request,
    _: Auth,
    list: Annotated[str | None, Query(max_length=63)] = None,
    status: SubscriberStatus | SubscriptionStatus | None = None,
) -> Response:
    return await export_response(context(request).db, list_slug=list, status=status)


async def export_response(db: Database, *, list_slug: str | None, status: str | None) -> Response:
    """The subscribers as a streamed CSV download (the API's and the admin page's). Raises NotFound or Invalid
    for an unknown list or status before anything is sent; the database connection goes back to the pool
    however the download ends."""
    # An async generator holding its connection: closing it stops the COPY and gives the connection back.
    chunks = cast(AsyncGenerator[bytes, None], imports.export_csv(db, list_slug=list_slug, status=status))
    try:
        header = await anext(chunks)
    except BaseException:
        await chunks.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        yield header
        async for chunk in chunks:
            yield chunk

    async def release() -> None:
        await chunks.aclose()

    # The list as found (normalized), never the raw parameter: it goes into a header.
    stem = "-".join(part for part in ("subscribers", _slug(list_slug) or "all", status) if part)
    return _Stream(
        body(),
        release,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{stem}-{datetime.now(UTC):%Y%m%d-%H%M%S}.csv"',
            "Cache-Control": "no-store",
        },
    )


class _Stream(StreamingResponse):
    """A streamed response that gives its database connection back however the stream ends: finished, failed,
    or cut short by the client going away."""

    def __init__(
        self, content: AsyncIterator[bytes], release: Callable[[], Awaitable[None]], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._release()


def _digest(source: BinaryIO) -> bytes:
    """SHA-256 of a file's content, read from the start; the file is left at its start."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: source.read(1 << 16), b""):
        digest.update(chunk)
    source.seek(0)
    return digest.digest()


def _slug(raw: str | None) -> str | None:
    try:
        return ListSlug.parse(raw).value if raw is not None else None
    except InvalidInput:
        return None
