"""The segment language (SPEC section 13): a filter over people, parsed into a tree, compiled to SQL.

    attributes.plan = "pro" and confirmed_at > 30d
    (list = "weekly" or list in ("daily", "news")) and not email contains "@example.com"
    attributes.seats >= 10 and attributes.tags contains "beta" and received 42

A small hand-written recursive-descent parser rather than a parsing library: the grammar is a dozen lines,
its errors must name the position in words an operator reads, and the tree must stay ours to type-check
(`list` compares with slugs, dates with dates) before anything reaches SQL.

Compiling never puts a value, a path or a slug into the SQL text: each is a parameter, and fields come from an
allow-list. Every comparison compiles to a boolean that is never NULL (a missing attribute compares false), so
`not` is plain negation, and `matches` below, the same tree evaluated in Python, agrees with the SQL on every
person (the property tests check it on random people).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

MAX_LENGTH = 4000
MAX_DEPTH = 32
MAX_COMPARISONS = 100
MAX_AGO_SECONDS = 5200 * 7 * 86400  # about 100 years
MAX_ID = 2**63 - 1  # the database's bigint

FIELDS = ("email", "name", "list", "subscribed_at", "confirmed_at")
ORDERING = ("<", "<=", ">", ">=")
OPERATORS = ("=", "!=", *ORDERING)
KEYWORDS = ("and", "or", "not", "in", "contains", "exists", "received", "true", "false")
UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATH_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")

Scalar = str | Decimal | bool


class SegmentError(ValueError):
    """A mistake in an expression, at `position` (0-based offset into it)."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"at column {position + 1}: {message}")
        self.message = message
        self.position = position


# The tree.


@dataclass(frozen=True, slots=True)
class Ago:
    """A relative time: so many seconds before now (`30d`)."""

    seconds: int


Value = Scalar | Ago | datetime


@dataclass(frozen=True, slots=True)
class Compare:
    field: str  # one of FIELDS, or "attributes"
    op: str  # one of OPERATORS, "in", "contains", "exists"
    values: tuple[Value, ...] = ()
    path: tuple[str, ...] = ()  # for attributes


@dataclass(frozen=True, slots=True)
class Received:
    issue_id: int


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple[Node, ...]


Node = Compare | Received | Not | BoolOp


# Tokens.


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "word", "string", "number", "duration", "op", "(", ")", ",", "end"
    text: str
    position: int
    value: Any = None


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<duration>\d+[mhdw])(?![A-Za-z0-9_.])
  | (?P<number>-?\d+(?:\.\d+)?)(?![A-Za-z0-9_])
  | (?P<word>[A-Za-z_][A-Za-z0-9_.-]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>!=|<=|>=|=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t"}


def _unescape(quoted: str, position: int) -> str:
    out: list[str] = []
    chars = iter(enumerate(quoted[1:-1], start=position + 1))
    for offset, char in chars:
        if char != "\\":
            out.append(char)
            continue
        offset, escaped = next(chars)
        if escaped not in _ESCAPES:
            raise SegmentError(f"unknown escape \\{escaped} in a string", offset - 1)
        out.append(_ESCAPES[escaped])
    return "".join(out)


def tokenize(text: str) -> Iterator[Token]:
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            if text[position] in "\"'":
                raise SegmentError("a string is not closed", position)
            raise SegmentError(f"unexpected {text[position]!r}", position)
        kind, raw = match.lastgroup or "", match.group()
        if kind == "string":
            yield Token("string", raw, position, _unescape(raw, position))
        elif kind == "number":
            yield Token("number", raw, position, Decimal(raw))
        elif kind == "duration":
            seconds = int(raw[:-1]) * UNITS[raw[-1]]
            if seconds > MAX_AGO_SECONDS:
                raise SegmentError("a relative time is at most 100 years (5200w)", position)
            yield Token("duration", raw, position, Ago(seconds))
        elif kind == "word":
            yield Token("word", raw.lower() if raw.lower() in KEYWORDS else raw, position)
        elif kind in ("op", "punct"):
            yield Token(raw if kind == "punct" else "op", raw, position)
        position = match.end()
    yield Token("end", "", len(text))


# The parser.


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = list(tokenize(text))
        self.at = 0
        self.comparisons = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def take(self) -> Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def keyword(self, word: str) -> bool:
        if self.token.kind == "word" and self.token.text == word:
            self.at += 1
            return True
        return False

    def expect(self, kind: str, what: str) -> Token:
        if self.token.kind != kind:
            raise SegmentError(f"expected {what}, found {_shown(self.token)}", self.token.position)
        return self.take()

    def expression(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise SegmentError(f"nested deeper than {MAX_DEPTH} levels", self.token.position)
        return self._joined("or", lambda: self._joined("and", lambda: self.unary(depth), depth), depth)

    def _joined(self, word: str, operand: Callable[[], Node], depth: int) -> Node:
        operands = [operand()]
        while self.keyword(word):
            operands.append(operand())
        return operands[0] if len(operands) == 1 else BoolOp(word, tuple(operands))

    def unary(self, depth: int) -> Node:
        if self.keyword("not"):
            return Not(self.unary(depth + 1))
        if self.token.kind == "(":
            self.take()
            inner = self.expression(depth + 1)
            self.expect(")", "')'")
            return inner
        return self.condition()

    def condition(self) -> Node:
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            raise SegmentError(f"more than {MAX_COMPARISONS} conditions", self.token.position)
        start = self.token
        if self.keyword("received"):
            number = self.expect("number", "an issue id after 'received'")
            if number.value != number.value.to_integral_value() or not 1 <= number.value <= MAX_ID:
                raise SegmentError("an issue id is a whole number above 0", number.position)
            return Received(int(number.value))
        if start.kind != "word" or start.text in KEYWORDS:
            raise SegmentError(
                f"expected a field (one of {_fields()}), found {_shown(start)}", start.position
            )
        self.take()
        name, path = _field(start)
        if self.keyword("exists"):
            return _checked(Compare(name, "exists", (), path), start)
        if self.keyword("contains"):
            return _checked(Compare(name, "contains", (self.value(),), path), start)
        if self.keyword("in"):
            self.expect("(", "'(' after 'in'")
            values = [self.value()]
            while self.token.kind == ",":
                self.take()
                values.append(self.value())
            self.expect(")", "')' or ','")
            return _checked(Compare(name, "in", tuple(values), path), start)
        op = self.expect("op", "an operator (=, !=, <, <=, >, >=, in, contains, exists)")
        return _checked(Compare(name, op.text, (self.value(),), path), start)

    def value(self) -> Value:
        token = self.take()
        if token.kind in ("string", "number", "duration"):
            value: Value = token.value
            return value
        if token.kind == "word" and token.text in ("true", "false"):
            return token.text == "true"
        raise SegmentError(
            f'expected a value ("text", a number, true, false or a time such as 30d), found {_shown(token)}',
            token.position,
        )


def _shown(token: Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text)


def _fields() -> str:
    return ", ".join((*FIELDS, "attributes.<name>"))


def _field(token: Token) -> tuple[str, tuple[str, ...]]:
    if token.text in FIELDS:
        return token.text, ()
    head, _, rest = token.text.partition(".")
    if head == "attributes" and rest:
        path = tuple(rest.split("."))
        for part in path:
            if not _PATH_PART.match(part):
                raise SegmentError(f"{part!r} is not an attribute name", token.position)
        return "attributes", path
    raise SegmentError(f"unknown field {token.text!r} (fields: {_fields()})", token.position)


def _checked(compare: Compare, at: Token) -> Compare:
    """Whether the comparison makes sense for its field; dates given as text become dates."""

    def fail(message: str) -> SegmentError:
        return SegmentError(message, at.position)

    field_, op, values = compare.field, compare.op, compare.values
    if field_ == "list":
        if op not in ("=", "!=", "in"):
            raise fail("a list is compared with =, != or in")
        if not all(isinstance(value, str) for value in values):
            raise fail('a list is named by its slug, in quotes: list = "weekly"')
        return compare
    if field_ in ("subscribed_at", "confirmed_at"):
        if op == "exists" and field_ == "confirmed_at":
            return compare
        if op not in ORDERING:
            raise fail(f"{field_} is compared with <, <=, > or >=")
        return Compare(field_, op, (_moment(values[0], fail),))
    if field_ in ("email", "name"):
        if op == "exists":
            if field_ == "email":
                raise fail("every person has an email")
            return compare
        if not all(isinstance(value, str) for value in values):
            raise fail(f"{field_} is compared with text, in quotes")
        return compare
    # attributes
    for value in values:
        if isinstance(value, Ago | datetime):
            raise fail("an attribute is compared with text, a number, true or false")
    if op in ORDERING and isinstance(values[0], bool):
        raise fail("true and false have no order")
    if op == "contains" and isinstance(values[0], bool):
        raise fail("contains takes text or a number")
    return compare


def _moment(value: Value, fail: Callable[[str], SegmentError]) -> Ago | datetime:
    if isinstance(value, Ago):
        return value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    raise fail('a time is relative (30d, 12h, 2w, 15m) or a date in quotes ("2026-01-31")')


@dataclass(frozen=True, slots=True)
class Segment:
    """A parsed expression."""

    text: str
    tree: Node

    @classmethod
    def parse(cls, raw: str) -> Segment:
        text = raw.strip()
        if not text:
            raise SegmentError("the expression is empty", 0)
        if len(text) > MAX_LENGTH:
            raise SegmentError(f"the expression is longer than {MAX_LENGTH} characters", MAX_LENGTH)
        parser = _Parser(text)
        tree = parser.expression(0)
        if parser.token.kind != "end":
            raise SegmentError(
                f"expected 'and', 'or' or the end, found {_shown(parser.token)}", parser.token.position
            )
        return cls(text, tree)

    def compile(self, person: str, first_parameter: int = 1) -> Compiled:
        """The tree as a boolean SQL expression over the subscribers row `person` (an alias from the
        caller's statement, never from input), its values as parameters numbered from `first_parameter`."""
        sql = _Compiler(person, first_parameter)
        return Compiled(sql.node(self.tree), tuple(sql.parameters))


@dataclass(frozen=True, slots=True)
class Compiled:
    sql: str
    parameters: tuple[Any, ...] = field(default=())


# To SQL.

_DATE_COLUMNS = {"subscribed_at": "created_at"}


class _Compiler:
    def __init__(self, person: str, first_parameter: int) -> None:
        if not re.fullmatch(r"[a-z_]+", person):
            raise ValueError(f"not an alias: {person!r}")
        self.person = person
        self.first = first_parameter
        self.parameters: list[Any] = []

    def param(self, value: Any, cast: str) -> str:
        """JSON goes as text, cast in SQL: a connection's jsonb codec would encode it a second time."""
        self.parameters.append(value)
        return f"${self.first + len(self.parameters) - 1}::{cast}"

    def node(self, node: Node) -> str:
        if isinstance(node, BoolOp):
            return "(" + f" {node.op.upper()} ".join(self.node(operand) for operand in node.operands) + ")"
        if isinstance(node, Not):
            return f"(NOT {self.node(node.operand)})"
        if isinstance(node, Received):
            return (
                f"EXISTS (SELECT FROM deliveries AS received WHERE received.subscriber_id = {self.person}.id "
                f"AND received.issue_id = {self.param(node.issue_id, 'bigint')} AND received.status = 'sent')"
            )
        if node.op == "!=":
            return f"(NOT {self.node(Compare(node.field, '=', node.values, node.path))})"
        if node.field == "attributes" and node.op not in ("=", "exists"):
            # A missing attribute, or one of another type, makes these NULL: false, so that `not` is negation.
            return f"coalesce({self.compare(node)}, false)"
        # The others are never NULL (their columns are NOT NULL, an EXISTS is true or false), and left bare
        # they stay what an index serves or what the planner turns into a join.
        return self.compare(node)

    def moment(self, value: Value) -> str:
        if isinstance(value, Ago):
            # A subquery, so that the clock is read once, not for each row.
            return f"(SELECT newsletter_now() - make_interval(secs => {self.param(value.seconds, 'bigint')}))"
        return self.param(value, "timestamptz")

    def compare(self, node: Compare) -> str:
        p, op, values = self.person, node.op, node.values
        if node.field == "list":
            slugs = self.param([str(value) for value in values], "text[]")
            return (
                f"EXISTS (SELECT FROM subscriptions AS member JOIN lists AS list ON list.id = member.list_id "
                f"WHERE member.subscriber_id = {p}.id AND member.status = 'confirmed' "
                f"AND list.slug = ANY({slugs}))"
            )
        if node.field == "confirmed_at":
            when = "" if op == "exists" else f" AND member.confirmed_at {op} {self.moment(values[0])}"
            return (
                f"EXISTS (SELECT FROM subscriptions AS member WHERE member.subscriber_id = {p}.id "
                f"AND member.status = 'confirmed'{when})"
            )
        if node.field == "subscribed_at":
            return f"{p}.created_at {op} {self.moment(values[0])}"
        if node.field in ("email", "name"):
            email = node.field == "email"
            column = f"lower({p}.email)" if email else f"{p}.name"
            if op == "exists":
                return f"{column} <> ''"
            if op == "contains":
                folded = column if email else f"lower({column})"
                return f"strpos({folded}, {self.param(str(values[0]).lower(), 'text')}) > 0"
            texts = [_folded(node.field, value) for value in values]
            if op == "in":
                return f"{column} = ANY({self.param(texts, 'text[]')})"
            if op == "=":
                # Without a collation of its own, so that the index on lower(email) serves it.
                return f"{column} = {self.param(texts[0], 'text')}"
            return f'{column} COLLATE "C" {op} {self.param(texts[0], "text")}'
        return self.attribute(node)

    def attribute(self, node: Compare) -> str:
        p, op, values = self.person, node.op, node.values
        if op == "=":
            # Containment, so that the GIN index on attributes (jsonb_path_ops, migration 0017) serves it; for
            # a scalar at the end of the path, containment is equality.
            return f"{p}.attributes @> {self.param(_nested(node.path, values[0]), 'text')}::jsonb"
        at = f"({p}.attributes #> {self.param(list(node.path), 'text[]')})"
        if op == "exists":
            return f"{at} IS NOT NULL"
        if op == "in":
            listed = self.param([_json(value) for value in values], "text[]")
            return f"{at} = ANY({listed}::jsonb[])"
        value = values[0]
        if op == "contains":
            text = self.param(str(value).lower(), "text")
            element = self.param(_json(value), "text") + "::jsonb"
            return (
                f"CASE jsonb_typeof({at}) WHEN 'array' THEN {at} @> jsonb_build_array({element}) "
                f"WHEN 'string' THEN strpos(lower({at} #>> '{{}}'), {text}) > 0 END"
            )
        if isinstance(value, Decimal):
            bound = self.param(value, "numeric")
            return f"CASE WHEN jsonb_typeof({at}) = 'number' THEN ({at})::numeric {op} {bound} END"
        bound = self.param(str(value), "text")
        return (
            f"CASE WHEN jsonb_typeof({at}) = 'string' THEN ({at} #>> '{{}}') COLLATE \"C\" {op} {bound} END"
        )


def _folded(field_: str, value: Value) -> str:
    """Addresses compare whatever their case; names as written."""
    return str(value).lower() if field_ == "email" else str(value)


def _json(value: Value) -> str:
    """A value as JSON text (a number as written: its Decimal, not a float)."""
    return str(value) if isinstance(value, Decimal) else json.dumps(value)


def _nested(path: Sequence[str], value: Value) -> str:
    document: Any = json.loads(_json(value))
    for part in reversed(path):
        document = {part: document}
    return json.dumps(document)


# The same tree, in Python.


@dataclass(frozen=True, slots=True)
class Person:
    """What a segment reads of a person: for evaluating a tree in Python (the tests' oracle, previews)."""

    email: str
    name: str
    attributes: Mapping[str, Any]
    subscribed_at: datetime
    confirmed: Mapping[str, datetime]  # list slug -> when confirmed (confirmed subscriptions only)
    received: frozenset[int] = frozenset()


def matches(tree: Node, person: Person, now: datetime) -> bool:
    if isinstance(tree, BoolOp):
        results = (matches(operand, person, now) for operand in tree.operands)
        return all(results) if tree.op == "and" else any(results)
    if isinstance(tree, Not):
        return not matches(tree.operand, person, now)
    if isinstance(tree, Received):
        return tree.issue_id in person.received
    if tree.op == "!=":
        return not matches(Compare(tree.field, "=", tree.values, tree.path), person, now)
    return _compare(tree, person, now)


def _when(value: Value, now: datetime) -> datetime:
    if isinstance(value, Ago):
        return now - timedelta(seconds=value.seconds)
    assert isinstance(value, datetime)
    return value


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _compare(node: Compare, person: Person, now: datetime) -> bool:
    op, values = node.op, node.values
    if node.field == "list":
        return any(value in person.confirmed for value in values)
    if node.field == "confirmed_at":
        if op == "exists":
            return bool(person.confirmed)
        return any(_ORDER[op](when, _when(values[0], now)) for when in person.confirmed.values())
    if node.field == "subscribed_at":
        return _ORDER[op](person.subscribed_at, _when(values[0], now))
    if node.field in ("email", "name"):
        column = person.email.lower() if node.field == "email" else person.name
        if op == "exists":
            return column != ""
        if op == "contains":
            return str(values[0]).lower() in column.lower()
        if op == "in":
            return column in {_folded(node.field, value) for value in values}
        return _ORDER[op](column.encode(), _folded(node.field, values[0]).encode())
    found, at = _lookup(person.attributes, node.path)
    if op == "exists":
        return found
    if not found:
        return False
    if op in ("=", "in"):
        return any(_same(at, value) for value in values)
    value = values[0]
    if op == "contains":
        if isinstance(at, list):
            return any(_same(element, value) for element in at)
        return isinstance(at, str) and str(value).lower() in at.lower()
    if isinstance(value, Decimal):
        return _is_number(at) and _ORDER[op](Decimal(str(at)), value)
    return isinstance(at, str) and _ORDER[op](at.encode(), str(value).encode())


def _lookup(document: Any, path: Sequence[str]) -> tuple[bool, Any]:
    for part in path:
        if not isinstance(document, Mapping) or part not in document:
            return False, None
        document = document[part]
    return True, document


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _same(stored: Any, value: Value) -> bool:
    """JSON equality as PostgreSQL's jsonb has it: numbers by value, true is not 1."""
    if isinstance(value, bool) or isinstance(stored, bool):
        return isinstance(value, bool) and isinstance(stored, bool) and stored == value
    if isinstance(value, Decimal):
        return _is_number(stored) and Decimal(str(stored)) == value
    return isinstance(stored, str) and stored == value
