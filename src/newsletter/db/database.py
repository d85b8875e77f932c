"""The connection pool, the errors that mean "the database is not answering", and the unit of work.

Services reach PostgreSQL through a `Database` only. `async with db.transaction() as conn:` is a unit of work:
it takes a connection and opens a transaction that commits when the block ends (or rolls back when an
exception leaves it); a unit of work opened inside another, in the same task, joins it as a savepoint, so a
caller can wrap a service's work in a larger one (the API stores an Idempotency-Key's response in the same
transaction as the change). `async with db.connection() as conn:` is for statements that each commit on their
own (a sign-up's two statements, reads): inside a unit of work it is that unit's connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import asyncpg
import structlog

from newsletter.config import Settings

log = structlog.get_logger(__name__)

# PostgreSQL errors and lost connections both mean "the database is not answering right now".
# InternalClientError: asyncpg's protocol left in a wrong state by a connection broken in the middle of an
# operation (seen when PostgreSQL restarts while a LISTEN is being sent); the pool replaces that connection.
DATABASE_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# Connection exceptions, insufficient resources, operator intervention (shutdown, restart), and a database
# that is not there (dropped, not yet created).
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "3D"})

# The pool and the connection of the unit of work open in this task, if any.
_current: ContextVar[tuple[asyncpg.Pool, asyncpg.Connection] | None] = ContextVar(
    "newsletter_connection", default=None
)


def is_unavailable(error: BaseException) -> bool:
    """The database is away (down, restarting, unreachable), as opposed to refusing a statement."""
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = getattr(error, "sqlstate", None) or ""
        return sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    return isinstance(error, DATABASE_ERRORS)


class Database:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._only: asyncpg.Connection | None = None

    @classmethod
    def on(cls, conn: asyncpg.Connection) -> Database:
        """A database reached through this one connection only (a command's, a test's)."""
        db = cls.__new__(cls)
        db._only = conn
        return db

    @property
    def side_by_side(self) -> bool:
        """Whether tasks of this one may each hold a connection of their own (not one connection, not inside
        a unit of work, whose connection they would all share)."""
        return self._only is None and _current.get() is None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A unit of work; inside another one of this task, a savepoint of it."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection whose statements commit one by one (or the open unit of work's)."""
        if self._only is not None:
            yield self._only
            return
        current = _current.get()
        if current is not None and current[0] is self.pool:
            yield current[1]
            return
        async with self.pool.acquire() as conn:
            token = _current.set((self.pool, conn))
            try:
                yield conn
            finally:
                _current.reset(token)

    # One statement, committed on its own (or in the open unit of work).

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(sql, *args)
            return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        async with self.connection() as conn:
            status: str = await conn.execute(sql, *args)
            return status

    @asynccontextmanager
    async def dedicated(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection of its own, outside any unit of work: for a stream that outlives the request that
        started it (a CSV export), whose chunks are read in another task."""
        if self._only is not None:
            yield self._only
            return
        async with self.pool.acquire() as conn:
            yield conn


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(_: asyncpg.Connection) -> None:
    return None


async def create_pool(url: str, settings: Settings, *, wait_seconds: float = 30) -> asyncpg.Pool:
    """Connect, waiting a while for a database that is still starting."""
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                url,
                min_size=min(settings.pool_min_size, settings.pool_max_size),
                max_size=settings.pool_max_size,
                init=_init_connection,
                # The default reset costs a round trip per checkout, and nothing here leaves session state
                # behind: settings are SET LOCAL, the worker unlistens itself, advisory locks are released.
                reset=_keep_session,
                command_timeout=60,
            )
            return pool
        except DATABASE_ERRORS as error:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("waiting for the database", error=str(error))
            await asyncio.sleep(1)
