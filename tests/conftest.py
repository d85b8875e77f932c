"""Shared fixtures: one PostgreSQL server per run, a fresh database per test cloned from a migrated template.

`DATABASE_URL` points the tests at an existing server; without it an embedded PostgreSQL is started.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from newsletter.db.embedded import start_embedded, stop_embedded
from newsletter.db.migrations import migrate
from tests.harness import SMTPServer, TestApp, spawn_app, with_database


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    url, handle = start_embedded(Path(tmp_path_factory.mktemp("embedded")))
    yield url
    stop_embedded(handle)


async def _admin(postgres_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(with_database(postgres_url, "postgres"))


@pytest.fixture(scope="session")
def template_database(postgres_url: str) -> Iterator[str]:
    name = f"newsletter_template_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        admin = await _admin(postgres_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(with_database(postgres_url, name))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def drop() -> None:
        admin = await _admin(postgres_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(create())
    yield name
    asyncio.run(drop())


async def create_database(postgres_url: str, template: str | None) -> str:
    name = f"newsletter_test_{uuid.uuid4().hex[:12]}"
    admin = await _admin(postgres_url)
    try:
        source = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{source}')
    finally:
        await admin.close()
    return name


async def drop_database(postgres_url: str, name: str) -> None:
    admin = await _admin(postgres_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database_url(postgres_url: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test alone."""
    name = await create_database(postgres_url, template_database)
    yield with_database(postgres_url, name)
    await drop_database(postgres_url, name)


@pytest.fixture
async def empty_database_url(postgres_url: str) -> AsyncIterator[str]:
    """A fresh database with no schema at all."""
    name = await create_database(postgres_url, None)
    yield with_database(postgres_url, name)
    await drop_database(postgres_url, name)


@pytest.fixture
def smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def app(database_url: str, smtp: SMTPServer) -> AsyncIterator[TestApp]:
    async with spawn_app(database_url, smtp) as test_app:
        yield test_app
