"""Segments: saved filters over people (SPEC section 13), their counts, and the filter an issue is sent with.

An expression is parsed when it is saved (a mistake is refused with its position) and compiled when it is
used (domain/segments.py); the SQL it becomes goes into a statement of a .sql file at the one place that file
marks for it, `/* segment */ true`, with its values as parameters after the statement's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.segments import Segment, SegmentError
from newsletter.services.audience.lists import EXACT_COUNT_BUDGET, shown_count
from newsletter.services.errors import Conflict, Invalid, NotFound

SLOT = "/* segment */ true"
# Rows a count beyond the budget samples (whole pages of them, TABLESAMPLE SYSTEM).
SAMPLE_ROWS = 30_000
FIELDS = ("id", "name", "expression", "created_at", "updated_at")


class InvalidSegment(Invalid):
    """An expression that does not parse: the message names the position, kept apart for clients."""

    def __init__(self, error: SegmentError) -> None:
        super().__init__(f"expression: {error}")
        self.position = error.position


def parse(expression: str) -> Segment:
    try:
        return Segment.parse(expression)
    except SegmentError as error:
        raise InvalidSegment(error) from None


def _name(name: str) -> str:
    cleaned = name.strip()
    if not 1 <= len(cleaned) <= 200:
        raise Invalid("name: give the segment a name of 1 to 200 characters")
    return cleaned


def filled(
    sql: str, segment: Segment | None, person: str, first_parameter: int
) -> tuple[str, tuple[Any, ...]]:
    """`sql` with its segment slot filled by `segment` over the subscribers row `person`, and the values that
    go with it; without a segment, the slot's `true` stays: everyone."""
    if sql.count(SLOT) != 1:
        raise AssertionError(f"the statement has {sql.count(SLOT)} segment slots, not one")
    if segment is None:
        return sql, ()
    compiled = segment.compile(person, first_parameter)
    return sql.replace(SLOT, compiled.sql), compiled.parameters


def _view(row: asyncpg.Record) -> dict[str, Any]:
    return {key: row[key] for key in FIELDS}


async def create_segment(db: Database, name: str, expression: str) -> dict[str, Any]:
    segment = parse(expression)
    async with db.connection() as conn:
        row = await conn.fetchrow(Q.segment_insert, _name(name), segment.text)
    if row is None:
        raise Conflict(f"a segment named {name.strip()!r} exists already")
    return _view(row)


async def get_segment(db: Database, segment_id: int) -> dict[str, Any]:
    async with db.connection() as conn:
        row = await conn.fetchrow(Q.segment_get, segment_id)
    if row is None:
        raise NotFound(f"segment {segment_id} does not exist")
    return _view(row)


async def all_segments(db: Database) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        return [_view(row) for row in await conn.fetch(Q.segments_all)]


async def update_segment(
    db: Database, segment_id: int, name: str | None, expression: str | None
) -> dict[str, Any]:
    text = parse(expression).text if expression is not None else None
    async with db.connection() as conn:
        row = await conn.fetchrow(
            Q.segment_update, segment_id, _name(name) if name is not None else None, text
        )
        if row is None:
            await get_segment(db, segment_id)
            raise Conflict(f"a segment named {(name or '').strip()!r} exists already")
    return _view(row)


async def delete_segment(db: Database, segment_id: int) -> None:
    async with db.connection() as conn:
        row = await conn.fetchrow(Q.segment_delete, segment_id)
    assert row is not None
    if not row["found"]:
        raise NotFound(f"segment {segment_id} does not exist")
    if row["used_by"] is not None:
        raise Conflict(f"issue {row['used_by']} is to be sent to this segment: change the issue first")


@dataclass(frozen=True, slots=True)
class Count:
    count: int
    estimated: bool


async def count(db: Database, expression: str) -> Count:
    """The active people the expression matches: counted up to a budget, estimated beyond it from a sample of
    the table (as the lists' counts are estimated), so that a count over millions answers at once."""
    segment = parse(expression)
    counted_sql, values = filled(Q.segment_count, segment, "subscribers", 2)
    async with db.transaction() as conn:
        await conn.execute(Q.without_jit)
        counted = await conn.fetchval(counted_sql, EXACT_COUNT_BUDGET + 1, *values)
        if counted <= EXACT_COUNT_BUDGET:
            return Count(counted, False)
        rows = await conn.fetchval(Q.subscribers_rows)
        share = min(100.0, 100.0 * SAMPLE_ROWS / max(rows, 1))
        sample_sql, values = filled(Q.segment_sample, segment, "subscribers", 2)
        sample = await conn.fetchrow(sample_sql, share, *values)
    assert sample is not None
    estimate = round(sample["matched"] / sample["sampled"] * rows) if sample["sampled"] else 0
    # The count went past the budget: whatever the sample says, there are more than that.
    return Count(shown_count(max(estimate, EXACT_COUNT_BUDGET + 1), True), True)


async def count_saved(db: Database, segment_id: int) -> Count:
    return await count(db, (await get_segment(db, segment_id))["expression"])
