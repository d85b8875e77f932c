"""Waking the workers after sign-ups, without a NOTIFY in every sign-up's transaction.

NOTIFY makes committing transactions queue on one lock, which a busy sign-up form feels. Sign-ups ask this
waker instead; it sends one NOTIFY for all the requests of the last few milliseconds, after they committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from newsletter.db.database import DATABASE_ERRORS

log = structlog.get_logger(__name__)

CHANNEL = "newsletter_deliveries"
COALESCE_SECONDS = 0.02


class Waker:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wanted.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self.pool.execute("SELECT pg_notify($1, '')", CHANNEL)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
                # The workers poll as well: a lost wake-up only delays the email by a second.
                log.warning("cannot wake the workers", error=str(error))
            await asyncio.sleep(COALESCE_SECONDS)


async def listen(pool: asyncpg.Pool, channel: str, wake: Callable[[], None], stopping: asyncio.Event) -> None:
    """Call `wake` on each NOTIFY on `channel` until `stopping` is set; reconnect when the connection drops
    (the workers poll as well, which covers the gap). Stops by itself within a second of `stopping`."""

    def notified(*_: Any) -> None:
        wake()

    while not stopping.is_set():
        try:
            conn = await pool.acquire()
        except DATABASE_ERRORS:
            await sleep_unless(stopping, 1.0)
            continue
        try:
            await conn.add_listener(channel, notified)
            while not stopping.is_set() and not conn.is_closed():
                await sleep_unless(stopping, 1.0)
        except DATABASE_ERRORS:
            pass
        finally:
            with contextlib.suppress(*DATABASE_ERRORS):
                if not conn.is_closed():
                    await conn.remove_listener(channel, notified)
            with contextlib.suppress(*DATABASE_ERRORS):
                await pool.release(conn)


async def sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
