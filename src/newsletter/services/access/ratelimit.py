"""Fixed-window rate limits counted in PostgreSQL, so they hold across every process."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from newsletter.db.database import Database
from newsletter.db.queries import Q


@dataclass(frozen=True, slots=True)
class Limit:
    key: str
    max_hits: int
    window_seconds: int


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limited; retry after {retry_after} s")
        self.retry_after = retry_after


def wrong_guesses(secret: str, client: str | None, limit: int, window_seconds: int) -> list[Limit]:
    """The counter of wrong guesses of a kind of secret (confirmation and unsubscribe tokens, webhook
    credentials) from one network address; none without an address."""
    return [Limit(f"{secret}:ip:{client}", limit, window_seconds)] if client is not None else []


async def hit(db: Database | asyncpg.Connection, limits: Sequence[Limit]) -> None:
    """Count one hit against every limit; raises RateLimited when any of them is exceeded."""
    by_key = {limit.key: limit for limit in limits}
    rows = await db.fetch(
        Q.hit_rate_limits,
        list(by_key),
        [limit.window_seconds for limit in by_key.values()],
    )
    waits = [row["retry_after"] for row in rows if row["hits"] > by_key[row["key"]].max_hits]
    if waits:
        raise RateLimited(max(1, math.ceil(max(waits))))


async def refuse_if_exceeded(db: Database | asyncpg.Connection, limits: Sequence[Limit]) -> None:
    """Raise RateLimited when any of the limits is already used up; counts nothing.

    For limits counted only on failure (wrong tokens): checked before the attempt, so that once refused, a
    right attempt is answered exactly as a wrong one.
    """
    rows = await db.fetch(
        Q.exceeded_rate_limits,
        [limit.key for limit in limits],
        [limit.max_hits for limit in limits],
    )
    if rows:
        raise RateLimited(max(1, math.ceil(max(row["retry_after"] for row in rows))))
