"""The migration runner: idempotent, safe from two processes at once, refuses edited history."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import pytest

from newsletter.db.migrations import MigrationError, available_migrations, migrate

pytestmark = pytest.mark.asyncio


async def test_migrating_twice_applies_each_file_once(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        first = await migrate(conn)
        second = await migrate(conn)
        assert first == [migration.version for migration in available_migrations()]
        assert second == []
        assert await conn.fetchval("SELECT slug FROM lists") == "default"
    finally:
        await conn.close()


async def test_two_processes_migrating_at_once_both_succeed(empty_database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": empty_database_url}
    runs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "newsletter",
            "migrate",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = [await run.communicate() for run in runs]

    assert [run.returncode for run in runs] == [0, 0], results
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(available_migrations())
        assert await conn.fetchval("SELECT count(*) FROM lists WHERE slug = 'default'") == 1
    finally:
        await conn.close()


async def test_concurrent_migrations_in_one_process_serialize(empty_database_url: str) -> None:
    conns = [await asyncpg.connect(empty_database_url) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(conn) for conn in conns))
        assert sorted(len(versions) for versions in applied) == [0, 0, len(available_migrations())]
    finally:
        for conn in conns:
            await conn.close()


async def test_an_applied_migration_that_was_edited_is_refused(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        await migrate(conn)
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_the_schema_has_what_the_queries_expect(database_url: str) -> None:
    """Every named query prepares against the migrated schema, so a renamed column fails here first."""
    from newsletter.db.queries import _all

    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            # The staging table of a CSV import exists only in the import's own transaction.
            await conn.execute(_all()["import_staging"])
            for name, sql in _all().items():
                try:
                    await conn.prepare(sql)
                except asyncpg.PostgresError as error:
                    pytest.fail(f"query {name!r} does not fit the schema: {error}")
    finally:
        await conn.close()
