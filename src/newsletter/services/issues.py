"""Issues: drafts, sending (now or later), pause, resume, cancel, test sends and the delivery ledger."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from newsletter.db.queries import query
from newsletter.services.content import markdown_to_html
from newsletter.services.errors import Conflict, Invalid, NotFound
from newsletter.tracing import current_traceparent

log = structlog.get_logger(__name__)

COUNTS = ("total", "pending", "sent", "failed", "suppressed", "cancelled")
# Outcomes an operator looks into; a partial index holds exactly these (migration 0007).
ATTENTION_STATUSES = frozenset({"failed", "bounced", "complained", "suppressed", "cancelled"})


@dataclass(frozen=True, slots=True)
class IssueContent:
    subject: str
    markdown: str | None
    html: str
    text: str

    @classmethod
    def parse(cls, subject: str, markdown: str | None, html: str | None, text: str | None) -> IssueContent:
        subject = subject.strip()
        if not subject:
            raise Invalid("subject: must not be empty")
        # Whatever the email package takes for the end of a line (VT, FF, NEL, U+2028...) as well as CR and
        # LF: accepted here, such a subject would stop the worker at the first message it renders.
        if any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in subject):
            raise Invalid("subject: must be one line, without control characters")
        if markdown is not None and html is not None:
            raise Invalid("give either markdown, or html and text, not both")
        if markdown is not None:
            return cls(subject, markdown, markdown_to_html(markdown), markdown)
        if html is None or text is None:
            raise Invalid("give markdown, or both html and text")
        return cls(subject, None, html, text)


def issue_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "subject": row["subject"],
        "status": row["status"],
        "lists": list(row["lists"]),
        "markdown": row["markdown"],
        "html": row["html"],
        "text": row["text_body"],
        "send_at": row["send_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "counts": {name: row[f"{name}_count"] for name in COUNTS},
    }


async def get_issue(conn: asyncpg.Connection, issue_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(query("issue_get"), issue_id)
    if row is None:
        raise NotFound(f"issue {issue_id} does not exist")
    return issue_view(row)


async def list_issues(
    conn: asyncpg.Connection, *, before: int | None, status: str | None, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(query("issue_list_page"), before, status, limit)
    return [issue_view(row) for row in rows]


async def _set_lists(conn: asyncpg.Connection, issue_id: int, slugs: Sequence[str]) -> None:
    found = {row["slug"] for row in await conn.fetch(query("issue_set_lists"), issue_id, list(slugs))}
    unknown = sorted(set(slugs) - found)
    if unknown:
        raise Invalid(f"lists: unknown list {', '.join(unknown)}")


async def create_issue(
    conn: asyncpg.Connection, content: IssueContent, lists: Sequence[str]
) -> dict[str, Any]:
    issue_id = await conn.fetchval(
        query("issue_insert"), content.subject, content.markdown, content.html, content.text
    )
    await _set_lists(conn, issue_id, lists)
    return await get_issue(conn, issue_id)


async def _lock(conn: asyncpg.Connection, issue_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(query("issue_lock"), issue_id)
    if row is None:
        raise NotFound(f"issue {issue_id} does not exist")
    return row


async def update_issue(
    conn: asyncpg.Connection, issue_id: int, content: IssueContent | None, lists: Sequence[str] | None
) -> dict[str, Any]:
    row = await _lock(conn, issue_id)
    if row["status"] != "draft":
        raise Conflict(f"issue {issue_id} is {row['status']}; only drafts can be changed")
    if content is not None:
        await conn.execute(
            query("issue_update"), issue_id, content.subject, content.markdown, content.html, content.text
        )
    if lists is not None:
        await _set_lists(conn, issue_id, lists)
    return await get_issue(conn, issue_id)


async def send_issue(
    conn: asyncpg.Connection, issue_id: int, send_at: datetime | None, request_id: str | None
) -> dict[str, Any]:
    """Send now (every delivery row created in this transaction) or schedule for `send_at`."""
    row = await _lock(conn, issue_id)
    if row["status"] not in ("draft", "scheduled"):
        raise Conflict(f"issue {issue_id} is {row['status']}; only drafts and scheduled issues can be sent")
    issue = await get_issue(conn, issue_id)
    if not issue["lists"]:
        raise Invalid("lists: the issue has no target list")
    if send_at is not None and send_at > datetime.now(UTC):
        await conn.execute(query("issue_schedule"), issue_id, send_at)
    else:
        total = await start_sending(conn, issue_id, request_id)
        log.info("issue sending", issue_id=issue_id, deliveries=total)
    return await get_issue(conn, issue_id)


async def start_sending(conn: asyncpg.Connection, issue_id: int, request_id: str | None) -> int:
    """Create the issue's deliveries and start it, inside the caller's transaction (the issue row locked)."""
    prepared = await conn.fetchrow(query("fan_out_prepare"), issue_id)
    tag = await conn.execute(query("issue_fan_out"), issue_id, prepared["lists"])
    total = int(tag.rsplit(" ", 1)[1])  # "INSERT 0 <rows>"
    await conn.execute(
        query("issue_started"), issue_id, total, prepared["floor"], request_id, current_traceparent()
    )
    return total


async def start_due_issues(pool: asyncpg.Pool) -> list[int]:
    """Start scheduled issues whose time has come; any number of workers may call this at once."""
    async with pool.acquire() as conn, conn.transaction():
        due = [row["id"] for row in await conn.fetch(query("issues_due"))]
        for issue_id in due:
            total = await start_sending(conn, issue_id, None)
            log.info("scheduled issue sending", issue_id=issue_id, deliveries=total)
    return due


async def _transition(conn: asyncpg.Connection, issue_id: int, name: str, allowed: tuple[str, ...]) -> None:
    row = await _lock(conn, issue_id)
    if row["status"] not in allowed:
        raise Conflict(f"issue {issue_id} is {row['status']}; it cannot be {name}d")
    await conn.execute(query(f"issue_{name}"), issue_id)


async def pause_issue(conn: asyncpg.Connection, issue_id: int) -> dict[str, Any]:
    await _transition(conn, issue_id, "pause", ("sending",))
    return await get_issue(conn, issue_id)


async def resume_issue(conn: asyncpg.Connection, issue_id: int) -> dict[str, Any]:
    await _transition(conn, issue_id, "resume", ("paused",))
    return await get_issue(conn, issue_id)


async def cancel_issue(conn: asyncpg.Connection, issue_id: int) -> dict[str, Any]:
    await _transition(conn, issue_id, "cancel", ("draft", "scheduled", "sending", "paused"))
    return await get_issue(conn, issue_id)


async def retry_failed(conn: asyncpg.Connection, issue_id: int) -> int:
    row = await _lock(conn, issue_id)
    if row["status"] not in ("sending", "paused", "sent"):
        raise Conflict(f"issue {issue_id} is {row['status']}; nothing to retry")
    retried: int = await conn.fetchval(query("issue_retry_failed"), issue_id)
    return retried


async def test_send(
    conn: asyncpg.Connection, issue_id: int, addresses: Sequence[str], request_id: str | None
) -> int:
    await _lock(conn, issue_id)
    queued: int = await conn.fetchval(
        query("issue_test_send"), issue_id, list(addresses), request_id, current_traceparent()
    )
    return queued


async def deliveries(
    conn: asyncpg.Connection, issue_id: int, *, status: str | None, after: int | None, limit: int
) -> list[dict[str, Any]]:
    await get_issue(conn, issue_id)
    name = "issue_deliveries_attention_page" if status in ATTENTION_STATUSES else "issue_deliveries_page"
    rows = await conn.fetch(query(name), issue_id, status, after, limit)
    return [dict(row) for row in rows]
