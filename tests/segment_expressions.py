"""Random segment expressions and people, for the property tests of the segment language (unit: the parser
and compiler; integration: the SQL against the Python evaluation on a seeded population)."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Any

from newsletter.domain.segments import Person

LISTS = ("default", "weekly", "news")
PLANS = ("pro", "free", "team", "Pro")
TAGS = ("beta", "vip", "early")
NAMES = ("", "Ada", "ada lovelace", "Grace", "Zoë", "O'Brien")
DOMAINS = ("example.com", "Example.org", "mail.test")
ISSUES = (1, 2)


def _text(rng: random.Random) -> str:
    return rng.choice([*PLANS, *TAGS, *NAMES, "a", "@example.com", "o'b", 'say "hi"', "\\", "%", "_"])


def _quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # double quotes, backslash escapes: the language reads them


def _number(rng: random.Random) -> str:
    return rng.choice(["0", "1", "5", "10", "2.5", "-1", "20"])


def _condition(rng: random.Random) -> str:
    kind = rng.randrange(12)
    op = rng.choice(["=", "!=", "<", "<=", ">", ">="])
    ordering = rng.choice(["<", "<=", ">", ">="])
    if kind == 0:
        address = _quoted(rng.choice(["ada@example.com", "EXAMPLE", "mail"]))
        return f"email {rng.choice(['=', '!=', 'contains'])} {address}"
    if kind == 1:
        return f"name {rng.choice([op, 'contains'])} {_quoted(_text(rng))}"
    if kind == 2:
        return "name exists"
    if kind == 3:
        slugs = rng.sample(LISTS, rng.randint(1, 2))
        if len(slugs) == 1 and rng.random() < 0.6:
            return f"list {rng.choice(['=', '!='])} {_quoted(slugs[0])}"
        return f"list in ({', '.join(_quoted(slug) for slug in slugs)})"
    if kind == 4:
        ago = rng.choice(["1d", "10d", "30d", "2w", "48h"])
        return f"{rng.choice(['subscribed_at', 'confirmed_at'])} {ordering} {ago}"
    if kind == 5:
        return "confirmed_at exists"
    if kind == 6:
        return f"attributes.plan {rng.choice(['=', '!=', 'contains', ordering])} {_quoted(rng.choice(PLANS))}"
    if kind == 7:
        return f"attributes.seats {op} {_number(rng)}"
    if kind == 8:
        return f"attributes.tags contains {_quoted(rng.choice(TAGS))}"
    if kind == 9:
        path = rng.choice(["plan", "seats", "tags", "company.size", "flag", "missing"])
        return f"attributes.{path} exists"
    if kind == 10:
        values = ", ".join(rng.choice([_quoted(rng.choice(PLANS)), _number(rng), "true"]) for _ in range(2))
        return f"attributes.{rng.choice(['plan', 'seats', 'flag'])} in ({values})"
    return (
        f"received {rng.choice(ISSUES)}"
        if rng.random() < 0.5
        else f"attributes.flag = {rng.choice(['true', 'false'])}"
    )


def expression(rng: random.Random, depth: int = 0) -> str:
    """A random, valid expression."""
    roll = rng.random()
    if depth >= 3 or roll < 0.4:
        return _condition(rng)
    if roll < 0.55:
        return (
            f"not {expression(rng, depth + 1)}"
            if rng.random() < 0.5
            else f"not ({expression(rng, depth + 1)})"
        )
    joiner = rng.choice([" and ", " or ", " AND ", " or\n"])
    parts = [expression(rng, depth + 1) for _ in range(rng.randint(2, 3))]
    joined = joiner.join(f"({part})" if rng.random() < 0.5 else part for part in parts)
    return f"({joined})" if rng.random() < 0.3 else joined


def attributes(rng: random.Random) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if rng.random() < 0.7:
        found["plan"] = rng.choice(PLANS)
    if rng.random() < 0.6:
        found["seats"] = rng.choice([0, 1, 5, 10, 20, 2.5, -1, 7])
    if rng.random() < 0.5:
        found["tags"] = rng.sample(TAGS, rng.randint(0, 3))
    if rng.random() < 0.3:
        found["company"] = {"size": rng.randint(1, 100)}
    if rng.random() < 0.4:
        found["flag"] = rng.choice([True, False])
    if rng.random() < 0.1:
        found["seats"] = "many"  # a string where a number is usual: compares false with numbers
    return found


def person(rng: random.Random, number: int, now: datetime) -> Person:
    confirmed = {
        slug: now - timedelta(days=rng.randint(0, 60), hours=rng.randint(1, 23))
        for slug in LISTS
        if rng.random() < 0.5
    }
    return Person(
        email=f"person{number}@{rng.choice(DOMAINS)}".lower()
        if rng.random() < 0.9
        else f"ada@example.com{number}",
        name=rng.choice(NAMES),
        attributes=attributes(rng),
        subscribed_at=now - timedelta(days=rng.randint(0, 60), hours=rng.randint(1, 23)),
        confirmed=confirmed,
        received=frozenset(issue for issue in ISSUES if rng.random() < 0.3),
    )
