"""Issues: drafts, sending (now or later), pause, resume, cancel, test sends and the delivery ledger.

The issue's state machine is one table (domain/vocabulary.py, ISSUE_TRANSITIONS) that every action checks
under the issue's row lock.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import structlog

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.vocabulary import ATTENTION_STATUSES, ISSUE_COUNTS, IssueAction, IssueStatus, may
from newsletter.services.audience import segments
from newsletter.services.errors import Conflict, Invalid, NotFound
from newsletter.services.sending.content import markdown_to_html
from newsletter.tracing import current_traceparent

log = structlog.get_logger(__name__)


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


def progress(row: asyncpg.Record) -> int:
    """Percent of an issue's deliveries that are settled, from its counters (never from the ledger)."""
    total, pending = row["total_count"], row["pending_count"]
    if not total:
        return 100 if row["status"] == IssueStatus.SENT else 0
    return int(100 * (total - pending) / total)


def issue_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "subject": row["subject"],
        "status": row["status"],
        "lists": list(row["lists"]),
        "segment": row["segment_id"],
        "segment_expression": row["segment_expression"],
        "markdown": row["markdown"],
        "html": row["html"],
        "text": row["text_body"],
        "send_at": row["send_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "counts": {name: row[f"{name}_count"] for name in ISSUE_COUNTS},
        "progress": progress(row),
    }


async def get_issue(db: Database, issue_id: int) -> dict[str, Any]:
    async with db.connection() as conn:
        row = await conn.fetchrow(Q.issue_get, issue_id)
    if row is None:
        raise NotFound(f"issue {issue_id} does not exist")
    return issue_view(row)


async def list_issues(
    db: Database, *, before: int | None, status: str | None, limit: int
) -> list[dict[str, Any]]:
    """Issues newest first, before the cursor `before`."""
    async with db.connection() as conn:
        rows = await conn.fetch(Q.issue_list_page, before, status, limit)
    return [issue_view(row) for row in rows]


async def _set_lists(conn: asyncpg.Connection, issue_id: int, slugs: Sequence[str]) -> None:
    found = {row["slug"] for row in await conn.fetch(Q.issue_set_lists, issue_id, list(slugs))}
    unknown = sorted(set(slugs) - found)
    if unknown:
        raise Invalid(f"lists: unknown list {', '.join(unknown)}")


async def _set_segment(conn: asyncpg.Connection, issue_id: int, segment_id: int | None) -> None:
    if await conn.fetchval(Q.issue_set_segment, issue_id, segment_id) is None:
        raise Invalid(f"segment: segment {segment_id} does not exist")


async def create_issue(
    db: Database, content: IssueContent, lists: Sequence[str], segment_id: int | None = None
) -> dict[str, Any]:
    async with db.transaction() as conn:
        issue_id = await conn.fetchval(
            Q.issue_insert, content.subject, content.markdown, content.html, content.text
        )
        await _set_lists(conn, issue_id, lists)
        if segment_id is not None:
            await _set_segment(conn, issue_id, segment_id)
        return await get_issue(db, issue_id)


async def _lock_for(conn: asyncpg.Connection, issue_id: int, action: IssueAction) -> asyncpg.Record:
    """The issue's row, locked, when `action` may start from its status; NotFound or Conflict otherwise."""
    row = await conn.fetchrow(Q.issue_lock, issue_id)
    if row is None:
        raise NotFound(f"issue {issue_id} does not exist")
    if not may(action, row["status"]):
        raise Conflict(f"issue {issue_id} is {row['status']}; {_REFUSALS[action]}")
    return row


_REFUSALS = {
    IssueAction.EDIT: "only drafts can be changed",
    IssueAction.SEND: "only drafts and scheduled issues can be sent",
    IssueAction.PAUSE: "it cannot be paused",
    IssueAction.RESUME: "it cannot be resumed",
    IssueAction.CANCEL: "it cannot be cancelled",
    IssueAction.RETRY_FAILED: "nothing to retry",
}


async def update_issue(
    db: Database,
    issue_id: int,
    content: IssueContent | None,
    lists: Sequence[str] | None,
    segment_id: int | Literal["unchanged"] | None = "unchanged",
) -> dict[str, Any]:
    """Change a draft; `segment_id` None sends it to everyone in its lists again."""
    async with db.transaction() as conn:
        await _lock_for(conn, issue_id, IssueAction.EDIT)
        if content is not None:
            await conn.execute(
                Q.issue_update, issue_id, content.subject, content.markdown, content.html, content.text
            )
        if lists is not None:
            await _set_lists(conn, issue_id, lists)
        if segment_id != "unchanged":
            await _set_segment(conn, issue_id, segment_id)
        return await get_issue(db, issue_id)


async def send_issue(
    db: Database, issue_id: int, send_at: datetime | None, request_id: str | None
) -> dict[str, Any]:
    """Send now (every delivery row created in this transaction) or schedule for `send_at`."""
    async with db.transaction() as conn:
        await _lock_for(conn, issue_id, IssueAction.SEND)
        issue = await get_issue(db, issue_id)
        if not issue["lists"]:
            raise Invalid("lists: the issue has no target list")
        if send_at is not None and send_at > datetime.now(UTC):
            await conn.execute(Q.issue_schedule, issue_id, send_at)
        else:
            total = await start_sending(conn, issue_id, request_id)
            log.info("issue sending", issue_id=issue_id, deliveries=total)
        return await get_issue(db, issue_id)


async def start_sending(conn: asyncpg.Connection, issue_id: int, request_id: str | None) -> int:
    """Create the issue's deliveries and start it, inside the caller's transaction (the issue row locked)."""
    prepared = await conn.fetchrow(Q.fan_out_prepare, issue_id)
    segment = prepared["segment"]
    # (A saved expression that no longer parses is refused here, never read as everyone.)
    parsed = segments.parse(segment) if segment is not None else None
    fan_out, values = segments.filled(Q.issue_fan_out, parsed, "subscribers", 3)
    tag = await conn.execute(fan_out, issue_id, prepared["lists"], *values)
    total = int(tag.rsplit(" ", 1)[1])  # "INSERT 0 <rows>"
    await conn.execute(
        Q.issue_started, issue_id, total, prepared["floor"], request_id, current_traceparent(), segment
    )
    return total


async def start_due_issues(db: Database) -> list[int]:
    """Start scheduled issues whose time has come; any number of workers may call this at once."""
    async with db.transaction() as conn:
        due = [row["id"] for row in await conn.fetch(Q.issues_due)]
        for issue_id in due:
            total = await start_sending(conn, issue_id, None)
            log.info("scheduled issue sending", issue_id=issue_id, deliveries=total)
    return due


_STEERING = {
    IssueAction.PAUSE: Q.issue_pause,
    IssueAction.RESUME: Q.issue_resume,
    IssueAction.CANCEL: Q.issue_cancel,
}


async def _steer(db: Database, issue_id: int, action: IssueAction) -> dict[str, Any]:
    async with db.transaction() as conn:
        await _lock_for(conn, issue_id, action)
        await conn.execute(_STEERING[action], issue_id)
        return await get_issue(db, issue_id)


async def pause_issue(db: Database, issue_id: int) -> dict[str, Any]:
    return await _steer(db, issue_id, IssueAction.PAUSE)


async def resume_issue(db: Database, issue_id: int) -> dict[str, Any]:
    return await _steer(db, issue_id, IssueAction.RESUME)


async def cancel_issue(db: Database, issue_id: int) -> dict[str, Any]:
    return await _steer(db, issue_id, IssueAction.CANCEL)


@dataclass(frozen=True, slots=True)
class Retried:
    retried: int
    # Of those, the deliveries to an address suppressed since: a retry marks them suppressed, not sent.
    suppressed: int


async def retry_failed(db: Database, issue_id: int) -> Retried:
    async with db.transaction() as conn:
        await _lock_for(conn, issue_id, IssueAction.RETRY_FAILED)
        suppressed: int = await conn.fetchval(Q.issue_failed_suppressed, issue_id)
        retried: int = await conn.fetchval(Q.issue_retry_failed, issue_id)
    return Retried(retried, suppressed)


async def failed_and_suppressed(db: Database, issue_id: int) -> int:
    """How many of an issue's failed deliveries a retry cannot send: their address is suppressed now.

    A refusal such as 550 suppresses the address it names, so a retried delivery to it would only be marked
    suppressed, and could not be retried again; the operator lifts the suppression first.
    """
    async with db.connection() as conn:
        count: int = await conn.fetchval(Q.issue_failed_suppressed, issue_id)
    return count


async def test_send(db: Database, issue_id: int, addresses: Sequence[str], request_id: str | None) -> int:
    """Test copies of the issue (a draft too) to the given addresses, outside its counts."""
    async with db.transaction() as conn:
        if await conn.fetchrow(Q.issue_lock, issue_id) is None:
            raise NotFound(f"issue {issue_id} does not exist")
        queued: int = await conn.fetchval(
            Q.issue_test_send, issue_id, list(addresses), request_id, current_traceparent()
        )
    return queued


async def deliveries(
    db: Database, issue_id: int, *, status: str | None, after: int | None, limit: int
) -> list[dict[str, Any]]:
    """A page of the issue's ledger: who got what, when, and why not."""
    await get_issue(db, issue_id)
    page = Q.issue_deliveries_attention_page if status in ATTENTION_STATUSES else Q.issue_deliveries_page
    async with db.connection() as conn:
        rows = await conn.fetch(page, issue_id, status, after, limit)
    return [dict(row) for row in rows]
