"""Sequences (SPEC section 12): the steps a list sends each person who enters it, one after another.

People enter when their subscription is confirmed (a trigger, migration 0016), or when the operator enrolls
the list's confirmed people; they leave when they unsubscribe, are suppressed, blocklisted or erased. The
worker's sweep (`sweep`) turns each due step into a delivery, and the delivery worker sends it as a newsletter
of the list is sent: the same composer, List-Id and unsubscribe link.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.vocabulary import MemberStatus, SequenceStatus
from newsletter.services.audience.lists import list_id_of
from newsletter.services.errors import Invalid, NotFound
from newsletter.services.sending.compose import Composer, Preview
from newsletter.services.sending.issues import IssueContent

# Ten years: a longer delay is a typo, not a plan.
MAX_DELAY_SECONDS = 10 * 365 * 86400
STEP_FIELDS = ("id", "position", "delay_seconds", "subject", "markdown", "created_at", "updated_at")


@dataclass(frozen=True, slots=True)
class StepContent:
    """A step's email and how long after the step before (or entering) it goes out; checked to render."""

    delay_seconds: int
    content: IssueContent

    @classmethod
    def parse(
        cls,
        composer: Composer,
        *,
        delay_seconds: int,
        subject: str,
        markdown: str | None,
        html: str | None = None,
        text: str | None = None,
    ) -> StepContent:
        if not 0 <= delay_seconds <= MAX_DELAY_SECONDS:
            raise Invalid(f"delay: must be between 0 and {MAX_DELAY_SECONDS} seconds (ten years)")
        content = IssueContent.parse(subject, markdown, html, text)
        try:
            composer.preview(
                content.subject, content.html, content.text, recipient="a@example.com", to_list=None
            )
        except Exception as error:  # what the worker would meet at the first email, met now
            raise Invalid(f"content: does not render ({error})") from None
        return cls(delay_seconds, content)


@dataclass(frozen=True, slots=True)
class Swept:
    due: int
    queued: int


def _sequence_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "list": row["list"],
        "status": row["status"],
        "steps": row["steps"],
        "members": {status: row[status] for status in MemberStatus},
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _step_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        **{key: row[key] for key in STEP_FIELDS},
        "html": row["html"],
        "text": row["text_body"],
        "counts": {"waiting": row["waiting"], "queued": row["queued"], "sent": row["sent"]},
    }


async def sequences(db: Database) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        return [_sequence_view(row) for row in await conn.fetch(Q.sequences_read, None)]


async def get_sequence(db: Database, sequence_id: int) -> dict[str, Any]:
    """A sequence with its steps, each with who got it and who waits for it."""
    async with db.connection() as conn:
        row = await conn.fetchrow(Q.sequences_read, sequence_id)
        if row is None:
            raise NotFound(f"sequence {sequence_id} does not exist")
        steps = await conn.fetch(Q.sequence_steps, sequence_id, None)
    return {**_sequence_view(row), "steps": [_step_view(step) for step in steps]}


async def create_sequence(
    db: Database, list_slug: str, name: str, status: SequenceStatus = SequenceStatus.ACTIVE
) -> dict[str, Any]:
    async with db.transaction() as conn:
        try:
            list_id = await list_id_of(conn, list_slug)
        except NotFound as error:
            raise Invalid(f"list: {error}") from None
        sequence_id = await conn.fetchval(Q.sequence_create, list_id, name, status)
        if sequence_id is None:
            raise Invalid(f"list: list {list_slug!r} does not exist")
        return await get_sequence(db, sequence_id)


async def update_sequence(
    db: Database, sequence_id: int, *, name: str | None = None, status: SequenceStatus | None = None
) -> dict[str, Any]:
    """Rename, pause (due steps wait) or resume (they go out)."""
    async with db.transaction() as conn:
        if await conn.fetchval(Q.sequence_update, sequence_id, name, status) is None:
            raise NotFound(f"sequence {sequence_id} does not exist")
        return await get_sequence(db, sequence_id)


async def delete_sequence(db: Database, sequence_id: int) -> None:
    async with db.transaction() as conn:
        if await conn.fetchval(Q.sequence_delete, sequence_id) is None:
            raise NotFound(f"sequence {sequence_id} does not exist")


async def get_step(db: Database, sequence_id: int, step_id: int) -> dict[str, Any]:
    """One step with its counts (the others' are not counted)."""
    async with db.connection() as conn:
        row = await conn.fetchrow(Q.sequence_steps, sequence_id, step_id)
    if row is None:
        raise NotFound(f"step {step_id} of sequence {sequence_id} does not exist")
    return _step_view(row)


def _content_args(step: StepContent) -> tuple[Any, ...]:
    content = step.content
    return step.delay_seconds, content.subject, content.markdown, content.html, content.text


async def add_step(db: Database, sequence_id: int, step: StepContent) -> dict[str, Any]:
    """A step after the last: members who were sent every step so far get it its delay after their last one
    (at once, if that is past)."""
    async with db.transaction() as conn:
        step_id = await conn.fetchval(Q.step_append, sequence_id, *_content_args(step))
        if step_id is None:
            raise NotFound(f"sequence {sequence_id} does not exist")
        await conn.execute(Q.sequence_reschedule, sequence_id)
        return await get_step(db, sequence_id, step_id)


async def update_step(db: Database, sequence_id: int, step_id: int, step: StepContent) -> dict[str, Any]:
    """What the step sends from now on, and when (those waiting for it are rescheduled)."""
    async with db.transaction() as conn:
        if await conn.fetchval(Q.step_update, sequence_id, step_id, *_content_args(step)) is None:
            raise NotFound(f"step {step_id} of sequence {sequence_id} does not exist")
        await conn.execute(Q.sequence_reschedule, sequence_id)
        return await get_step(db, sequence_id, step_id)


async def delete_step(db: Database, sequence_id: int, step_id: int) -> None:
    """The step goes; who was sent it moves on to the step after it, its queued emails are cancelled."""
    async with db.transaction() as conn:
        position = await conn.fetchval(Q.step_delete, sequence_id, step_id)
        if position is None:
            raise NotFound(f"step {step_id} of sequence {sequence_id} does not exist")
        await conn.execute(Q.steps_renumber, sequence_id, position)
        await conn.execute(Q.sequence_reschedule, sequence_id)


async def members(
    db: Database,
    sequence_id: int,
    *,
    step: int | None = None,
    status: MemberStatus | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Who is where: `step` N, those whose last step sent is N (0: waiting for the first)."""
    await get_sequence(db, sequence_id)
    async with db.connection() as conn:
        rows = await conn.fetch(Q.sequence_members_page, sequence_id, step, status, after, limit)
    return [dict(row) for row in rows]


async def enroll(db: Database, sequence_id: int) -> dict[str, Any]:
    """The list's confirmed people enter the sequence (members already in it stay where they are)."""
    async with db.transaction() as conn:
        await conn.execute(Q.members_lock)
        row = await conn.fetchrow(Q.sequence_enroll, sequence_id)
    assert row is not None
    if not row["found"]:
        raise NotFound(f"sequence {sequence_id} does not exist")
    return {"entered": row["entered"]}


async def sweep(
    db: Database, batch: int, *, connections: int = 1, on_queued: Callable[[int], None] | None = None
) -> Swept:
    """Queue the due steps, `batch` at a time, until none is due, on so many `connections` side by side (SKIP
    LOCKED keeps their members apart), so that a large sweep uses more than one of the database's cores;
    `on_queued` hears of each batch as it commits, so that sending starts before the sweep ends."""

    async def one_connection() -> Swept:
        due = queued = 0
        while True:
            async with db.connection() as conn:
                row = await conn.fetchrow(Q.sequence_sweep, batch)
            assert row is not None
            due, queued = due + row["due"], queued + row["queued"]
            if row["queued"] and on_queued is not None:
                on_queued(row["queued"])
            if row["due"] < batch:
                return Swept(due, queued)

    swept = await asyncio.gather(*(one_connection() for _ in range(connections if db.side_by_side else 1)))
    return Swept(sum(part.due for part in swept), sum(part.queued for part in swept))


def preview(composer: Composer, step: StepContent, *, list_slug: str, list_name: str) -> Preview:
    """The step's email as a member of the list receives it."""
    content = step.content
    return composer.preview(
        content.subject,
        content.html,
        content.text,
        recipient="member@example.com",
        to_list=(list_slug, list_name),
    )
