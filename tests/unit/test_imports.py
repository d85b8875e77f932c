"""The CSV row parser and its fast paths: an imported address and a signed-up one are the same subscriber."""

from __future__ import annotations

import csv
import io
import re
import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from newsletter.domain.subscriber import InvalidInput, SubscriberEmail, SubscriberName
from newsletter.services.audience.imports import (
    MAX_REJECTED_LISTED,
    ImportReport,
    Rejected,
    RowParser,
    normalize_email,
    normalize_name,
)
from newsletter.services.errors import Invalid

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
# Pieces chosen to hit the edges of both paths: dots, role names, case, IDNA, reserved names, odd characters.
local_parts = st.one_of(
    st.text(alphabet=ATEXT + ".", min_size=0, max_size=70),
    st.sampled_from(["Postmaster", "INFO", "abuse", "www", "a..b", ".a", "a.", '"quoted"', "ü", "Jöhn"]),
    st.text(max_size=12),
)
labels = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "-", min_size=1, max_size=20),
    st.sampled_from(["xn--bcher-kva", "XN--BCHER-KVA", "bücher", "ÉCOLE", "ab--cd", "-x", "x-", "123", "_x"]),
    st.text(min_size=1, max_size=6),
)
tlds = st.sampled_from(
    ["com", "COM", "de", "test", "invalid", "local", "localhost", "onion", "co.uk", "1", "x"]
)
domains = st.one_of(
    st.builds(lambda parts, tld: ".".join([*parts, tld]), st.lists(labels, min_size=0, max_size=4), tlds),
    st.text(max_size=20),
    st.builds(lambda n: "a" * n + ".com", st.integers(min_value=50, max_value=260)),
)
spaces = st.sampled_from(["", " ", "\t", "\u00a0", "\n"])
addresses = st.one_of(
    st.builds(
        lambda pad, local, at, domain, end: f"{pad}{local}{at}{domain}{end}",
        spaces,
        local_parts,
        st.sampled_from(["@", "@@", "@", "@"]),
        domains,
        spaces,
    ),
    st.text(max_size=300),
)


def _full(raw: str) -> str | Exception:
    try:
        return SubscriberEmail.parse(raw).value
    except InvalidInput as error:
        return error


def _fast(raw: str) -> str | Exception:
    try:
        return normalize_email(raw)
    except InvalidInput as error:
        return error


@settings(max_examples=3000)
@given(addresses)
@example("Ada.Lovelace@Example.COM")
@example("POSTMASTER@example.com")
@example("ada@XN--BCHER-KVA.com")
@example("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".com")
@example("x" * 200 + "@" + "ü" * 20 + ".com")
def test_the_fast_email_path_answers_exactly_as_the_full_parser(raw: str) -> None:
    full, fast = _full(raw), _fast(raw)
    if isinstance(full, Exception):
        assert isinstance(fast, InvalidInput)
        assert str(fast) == str(full)
    else:
        assert fast == full


@settings(max_examples=2000)
@given(
    st.one_of(
        st.text(max_size=300),
        st.sampled_from(["  Ada  ", "Zoë", "Zoe\u0308", "a\u202eb", "a\x00", "é" * 257]),
    )
)
def test_the_fast_name_path_answers_exactly_as_the_full_parser(raw: str) -> None:
    try:
        expected: str | None = SubscriberName.parse(raw).value
    except InvalidInput:
        expected = None
    if expected is None:
        with pytest.raises(InvalidInput):
            normalize_name(raw)
    else:
        assert normalize_name(raw) == expected


def _parse(data: bytes) -> tuple[list[tuple[int, str, str | None, str | None]], RowParser]:
    parser = RowParser(io.BytesIO(data))
    rows = [row for chunk in parser.chunks() for row in chunk]
    return rows, parser


@given(
    st.lists(
        st.tuples(
            st.text(max_size=40), st.text(max_size=40), st.sampled_from(["", "{}", '{"a": 1}', "[1]", "{"])
        ),
        max_size=30,
    )
)
def test_every_data_row_is_either_staged_or_rejected_with_its_line(
    rows: list[tuple[str, str, str]],
) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["email", "name", "attributes"])
    writer.writerows(rows)
    staged, parser = _parse(text.getvalue().encode("utf-8", "surrogatepass"))

    # Each row has one fate.
    lines = {line for line, *_ in staged} | {rejected.line for rejected in parser.rejected}
    assert len(lines) == len(staged) + len(parser.rejected)
    assert len(staged) + parser.rejected_total == len(rows)
    for _, email, name, _ in staged:
        assert email == SubscriberEmail.parse(email).value
        assert name is None or name == SubscriberName.parse(name).value
    for rejected in parser.rejected:
        assert rejected.reason
        assert rejected.email.isprintable()


def test_rows_are_numbered_by_their_first_line_with_the_header_as_line_one() -> None:
    data = (
        b"\xef\xbb\xbfEmail,Name\n"
        b"ada@example.com,Ada\n"
        b'grace@example.com,"two\nlines"\n'
        b"\n"
        b"bad address,Bob\n"
        b"\xff\xfe@example.com,X\n"
        b"only-one-field@example.com\n"
        b"alan@example.com,Alan\r\n"
    )

    staged, parser = _parse(data)

    assert staged == [(2, "ada@example.com", "Ada", None), (9, "alan@example.com", "Alan", None)]
    assert [(item.line, item.email, item.reason) for item in parser.rejected] == [
        (3, "grace@example.com", "name: Names cannot contain control characters."),
        (6, "bad address", "email: This is not a valid email address: An email address must have an @-sign."),
        (7, "\ufffd\ufffd@example.com", "not valid UTF-8"),
        (8, "only-one-field@example.com", "expected 2 fields as in the header, found 1"),
    ]


def test_attributes_must_be_a_json_object_that_postgresql_stores() -> None:
    data = (
        b"email,attributes\n"
        b'a@example.com,"{""city"": ""Paris"", ""n"": [1, 2.5]}"\n'
        b"b@example.com,\n"
        b"c@example.com,[1]\n"
        b"d@example.com,{city: Paris}\n"
        b'e@example.com,"{""x"": NaN}"\n'
        b'f@example.com,"{""x"": ""\\u0000""}"\n'
        b'g@example.com,"{""x"": ""\\ud800""}"\n'
        b'h@example.com,"{""x"": ""' + b"y" * 20_000 + b'""}"\n'
    )

    staged, parser = _parse(data)

    assert staged == [
        (2, "a@example.com", None, '{"city":"Paris","n":[1,2.5]}'),
        (3, "b@example.com", None, None),
    ]
    reasons = {item.line: item.reason for item in parser.rejected}
    assert reasons[4] == 'attributes: must be a JSON object, e.g. {"city": "Paris"}'
    assert reasons[5].startswith("attributes: not valid JSON")
    assert "NaN" in reasons[6]
    assert "NUL" in reasons[7]
    assert "\\ud800" in reasons[8]
    assert "larger than 16 KB" in reasons[9]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no 'email' column"),
        (b"name,mail\nAda,ada@example.com\n", "no 'email' column in its first line (found: name, mail)"),
        (b"email,Email\na@example.com,b@example.com\n", "more than one 'email' column"),
    ],
)
def test_a_file_without_one_email_column_is_refused_whole(data: bytes, message: str) -> None:
    with pytest.raises(Invalid, match=re.escape(message)):
        RowParser(io.BytesIO(data))


def test_unknown_columns_are_ignored_and_empty_values_are_not_given() -> None:
    staged, parser = _parse(b"id,Email , NAME,phone\n7, Ada@Example.com ,,555\n")

    assert staged == [(2, "Ada@example.com", None, None)]
    assert parser.rejected == []


def test_progress_reports_the_bytes_read_so_far() -> None:
    data = b"email\n" + b"".join(f"reader{n}@example.com\n".encode() for n in range(100_000))
    seen: list[int] = []

    parser = RowParser(io.BytesIO(data), progress=seen.append)
    staged = [row for chunk in parser.chunks() for row in chunk]

    assert len(staged) == 100_000
    assert seen == sorted(seen) and seen[-1] == len(data)
    assert len(seen) > 1


def test_the_report_lists_the_first_rejected_rows_and_counts_them_all() -> None:
    data = b"email\n" + b"not an address\n" * (MAX_REJECTED_LISTED + 5)

    staged, parser = _parse(data)
    report = ImportReport(0, 0, 0, parser.rejected, parser.rejected_total)

    assert staged == []
    assert len(report.rejected) == MAX_REJECTED_LISTED
    assert report.rejected_total == MAX_REJECTED_LISTED + 5
    assert report.as_dict()["rejected"][0] == {"line": 2, "email": "not an address", "reason": ANY_REASON}
    assert ImportReport(1, 2, 3, [Rejected(4, "x", "y")]).rejected_total == 1


class _AnyReason(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith("email: ")

    __hash__ = str.__hash__


ANY_REASON = _AnyReason()


@given(st.text(max_size=40))
def test_a_cell_neutralised_for_spreadsheets_reads_back_as_it_was(value: str) -> None:
    from newsletter.services.audience.imports import read_cell, write_cell

    written = write_cell(value)

    assert read_cell(written) == value
    assert written[:1] not in ("=", "+", "-", "@", "\t", "\r")
