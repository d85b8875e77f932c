"""Fixtures of the resilience scenarios: a counting SMTP server, the ledger, and the stand-in for Postmark."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.harness import SMTPServer
from tests.integration.test_postmark import postmark  # noqa: F401 - the fake Postmark API, reused as is
from tests.resilience.measure import CountingSMTPHandler


@pytest.fixture
def counting_smtp() -> Iterator[SMTPServer]:
    server = SMTPServer()
    server.handler = CountingSMTPHandler()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to read the deliveries table, the ledger each scenario is held against."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()
