"""The segment language: what it accepts, where it says a mistake is, and that no value reaches SQL text."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.domain.segments import (
    Ago,
    BoolOp,
    Compare,
    Node,
    Not,
    Person,
    Received,
    Segment,
    SegmentError,
    matches,
)
from tests.segment_expressions import expression


def test_the_issue_s_example_parses_into_its_tree() -> None:
    segment = Segment.parse('attributes.plan = "pro" and confirmed_at > 30d')
    assert segment.tree == BoolOp(
        "and",
        (
            Compare("attributes", "=", ("pro",), ("plan",)),
            Compare("confirmed_at", ">", (Ago(30 * 86400),)),
        ),
    )


def test_and_binds_tighter_than_or_and_not_tighter_than_both() -> None:
    tree = Segment.parse('name = "a" or not name = "b" and received 3').tree
    assert tree == BoolOp(
        "or",
        (
            Compare("name", "=", ("a",)),
            BoolOp("and", (Not(Compare("name", "=", ("b",))), Received(3))),
        ),
    )


def test_values_of_every_kind() -> None:
    tree = Segment.parse(
        "attributes.seats >= 2.5 and attributes.flag = true and list in ('a', \"b\") "
        'and subscribed_at < "2026-01-31" and name = "say \\"hi\\""'
    ).tree
    assert isinstance(tree, BoolOp)
    seats, flag, lists, subscribed, name = tree.operands
    assert seats == Compare("attributes", ">=", (Decimal("2.5"),), ("seats",))
    assert flag == Compare("attributes", "=", (True,), ("flag",))
    assert lists == Compare("list", "in", ("a", "b"))
    assert subscribed == Compare("subscribed_at", "<", (datetime(2026, 1, 31, tzinfo=UTC),))
    assert name == Compare("name", "=", ('say "hi"',))


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ('attributes.plan = "pro" and confirmed_at > 30x', 43, "unexpected"),
        ('attributes.plan = "pro" and', 27, "expected a field"),
        ('plan = "pro"', 0, "unknown field 'plan'"),
        ('list < "weekly"', 0, "a list is compared with"),
        ('(email = "a"', 12, "expected ')'"),
        ('email = "a" email = "b"', 12, "expected 'and', 'or'"),
        ('name = "unclosed', 7, "not closed"),
        ('confirmed_at > "yesterday"', 0, "a time is relative"),
        ("attributes.flag > true", 0, "no order"),
        ("received 0", 9, "whole number"),
        ("received 99999999999999999999", 9, "whole number"),
        ("subscribed_at > 9999999999w", 16, "at most 100 years"),
        ("'; drop table subscribers; --", 0, "not closed"),
        ("email = 1", 0, "with text"),
        ("", 0, "empty"),
        ("attributes.bad$name exists", 14, "unexpected"),
    ],
)
def test_a_mistake_names_its_position(text: str, position: int, words: str) -> None:
    with pytest.raises(SegmentError) as raised:
        Segment.parse(text)
    assert raised.value.position == position, str(raised.value)
    assert words in str(raised.value)
    assert str(raised.value).startswith(f"at column {position + 1}: ")


def test_nesting_and_length_are_bounded() -> None:
    with pytest.raises(SegmentError, match="nested deeper"):
        Segment.parse("(" * 40 + 'name = "a"' + ")" * 40)
    with pytest.raises(SegmentError, match="more than 100 conditions"):
        Segment.parse(" or ".join(["name exists"] * 101))
    with pytest.raises(SegmentError, match="longer than"):
        Segment.parse("name = " + '"' + "a" * 5000 + '"')


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_any_text_parses_or_is_a_clear_mistake(text: str) -> None:
    try:
        segment = Segment.parse(text)
    except SegmentError as error:
        assert 0 <= error.position <= len(text.strip()) + 1
    else:
        segment.compile("subscribers")


def _shape(node: Node) -> Node:
    """The tree with every value and path replaced by another of the same kind."""
    if isinstance(node, BoolOp):
        return BoolOp(node.op, tuple(_shape(operand) for operand in node.operands))
    if isinstance(node, Not):
        return Not(_shape(node.operand))
    if isinstance(node, Received):
        return Received(node.issue_id + 1000)
    values = tuple(
        value
        if isinstance(value, bool)
        else Decimal(7)
        if isinstance(value, Decimal)
        else Ago(value.seconds + 1)
        if isinstance(value, Ago)
        else datetime(2001, 1, 1, tzinfo=UTC)
        if isinstance(value, datetime)
        else "x' OR 1=1 --"
        for value in node.values
    )
    return replace(node, values=values, path=tuple(f"other{i}" for i, _ in enumerate(node.path)))


@settings(max_examples=300)
@given(st.randoms(use_true_random=False))
def test_no_value_reaches_the_sql_text(rng: random.Random) -> None:
    """The SQL depends on the shape of the tree only: other values, the same text. So every value, path and
    slug is a parameter, whatever it holds."""
    segment = Segment.parse(expression(rng))
    compiled = segment.compile("subscribers", 3)
    other = Segment(segment.text, _shape(segment.tree)).compile("subscribers", 3)
    assert compiled.sql == other.sql
    assert len(compiled.parameters) == len(other.parameters)
    numbers = {int(n) for n in re.findall(r"\$(\d+)", compiled.sql)}
    assert numbers == set(range(3, 3 + len(compiled.parameters))), "every parameter used, from 3 on"
    assert "'" not in compiled.sql.replace("'{}'", "").replace("'confirmed'", "").replace(
        "'sent'", ""
    ).replace("'array'", "").replace("'string'", "").replace("'number'", "").replace("''", "")


def test_an_injection_is_text_like_any_other() -> None:
    segment = Segment.parse('name = "x\'; DROP TABLE subscribers; --"')
    compiled = segment.compile("subscribers")
    assert "DROP" not in compiled.sql
    assert compiled.parameters == ("x'; DROP TABLE subscribers; --",)


def test_the_python_evaluation_reads_people_as_the_sql_does() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    ada = Person(
        email="Ada@Example.com",
        name="Ada",
        attributes={"plan": "pro", "seats": 10, "tags": ["beta"], "flag": True},
        subscribed_at=datetime(2026, 11, 20, tzinfo=UTC),
        confirmed={"weekly": datetime(2026, 11, 21, tzinfo=UTC)},
        received=frozenset({3}),
    )

    def check(text: str) -> bool:
        return matches(Segment.parse(text).tree, ada, now)

    assert check('attributes.plan = "pro" and confirmed_at > 30d')
    assert not check("confirmed_at > 5d")
    assert check('email = "ada@example.COM" and email contains "EXAMPLE"')
    assert check('list = "weekly" and not list = "daily"')
    assert check("attributes.seats > 2.5 and attributes.seats in (10, 11) and attributes.flag = true")
    assert not check("attributes.flag = 1"), "true is not 1"
    assert check('attributes.tags contains "beta" and not attributes.tags contains "vip"')
    assert check('attributes.missing != "x" and not attributes.missing exists')
    assert not check('attributes.missing < "x"'), "a missing attribute compares false"
    assert check("received 3 and not received 4")
