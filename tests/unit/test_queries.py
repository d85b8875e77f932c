"""The query registry: every field of `Queries` has its query in the .sql files and every query a field, so
that a missing or misspelled one fails here (and at start-up), not on the path that runs it."""

from __future__ import annotations

from dataclasses import fields

import pytest

from newsletter.db.queries import Q, Queries, QueryError, load, read_files


def test_the_registry_and_the_files_name_the_same_queries() -> None:
    assert set(read_files()) == {field.name for field in fields(Queries)}
    assert all(getattr(Q, field.name).strip() for field in fields(Queries))


def test_a_query_missing_from_the_files_stops_the_start() -> None:
    found = read_files()
    del found["subscribe"]

    with pytest.raises(QueryError, match="subscribe"):
        load(found)


def test_a_query_the_registry_does_not_know_stops_the_start() -> None:
    with pytest.raises(QueryError, match="subscrbe"):
        load({**read_files(), "subscrbe": "SELECT 1"})
