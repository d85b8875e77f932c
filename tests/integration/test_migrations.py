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
    from dataclasses import asdict

    from newsletter.db.queries import Q

    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            # The staging table of a CSV import exists only in the import's own transaction.
            await conn.execute(Q.import_staging)
            for name, sql in asdict(Q).items():
                try:
                    await conn.prepare(sql)
                except asyncpg.PostgresError as error:
                    pytest.fail(f"query {name!r} does not fit the schema: {error}")
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("table", "column", "vocabulary"),
    [
        ("lists", "optin", "OptIn"),
        ("lists", "visibility", "Visibility"),
        ("subscribers", "status", "SubscriberStatus"),
        ("subscriptions", "status", "SubscriptionStatus"),
        ("suppressions", "reason", "SuppressionReason"),
        ("deliveries", "kind", "DeliveryKind"),
        ("deliveries", "status", "DeliveryStatus"),
        ("issues", "status", "IssueStatus"),
        ("api_tokens", "scope", "TokenScope"),
        ("delivery_events", "kind", "ReportKind"),
        ("delivery_events", "provider", "Reporter"),
        ("events", "type", "EventType"),
        ("sequences", "status", "SequenceStatus"),
        ("sequence_members", "status", "MemberStatus"),
        ("sequence_members", "left_reason", "LeftReason"),
    ],
)
async def test_the_vocabulary_is_the_schemas(
    database_url: str, table: str, column: str, vocabulary: str
) -> None:
    """Each enumeration of domain/vocabulary.py holds just the values its column's CHECK constraint allows."""
    import re

    from newsletter.domain import vocabulary as words

    conn = await asyncpg.connect(database_url)
    try:
        definitions = await conn.fetch(
            """SELECT pg_get_constraintdef(c.oid) AS definition FROM pg_constraint AS c
               JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
               WHERE c.contype = 'c' AND c.conrelid = $1::regclass AND a.attname = $2""",
            table,
            column,
        )
    finally:
        await conn.close()
    [definition] = [row["definition"] for row in definitions]
    allowed = set(re.findall(r"'([^']*)'::text", definition))
    assert allowed == {str(member) for member in getattr(words, vocabulary)}, definition
