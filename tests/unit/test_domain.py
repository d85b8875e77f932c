"""Parsing at the edge: property-based tests of the value objects."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.domain.subscriber import (
    MAX_NAME_LENGTH,
    InvalidInput,
    ListSlug,
    SubscriberEmail,
    SubscriberName,
)
from newsletter.domain.tokens import Token

local_parts = st.text(alphabet=string.ascii_letters + string.digits + "._+-", min_size=1, max_size=30).filter(
    lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s
)
domains = st.lists(
    st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=12), min_size=1, max_size=3
).map(lambda labels: ".".join([*labels, "com"]))


@given(local_parts, domains)
def test_valid_addresses_parse_and_keep_their_local_part(local: str, domain: str) -> None:
    parsed = SubscriberEmail.parse(f"  {local}@{domain.upper()} ")
    assert parsed.value == f"{local}@{domain}"


@given(st.text(max_size=300))
def test_parsing_any_text_either_succeeds_or_raises_invalid_input(raw: str) -> None:
    try:
        parsed = SubscriberEmail.parse(raw)
    except InvalidInput as error:
        assert str(error)
    else:
        assert "@" in parsed.value
        assert "\r" not in parsed.value and "\n" not in parsed.value


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        "plainaddress",
        "@example.com",
        "ada@",
        "ada@@example.com",
        "ada@example..com",
        "ada@example.com\r\nBcc: x@y.z",
        "a" * 250 + "@example.com",
    ],
)
def test_invalid_addresses_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidInput):
        SubscriberEmail.parse(raw)


@given(
    st.text(
        alphabet=st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")),
        max_size=MAX_NAME_LENGTH,
    )
)
def test_names_without_control_characters_are_accepted(raw: str) -> None:
    assert SubscriberName.parse(raw).value.strip() == SubscriberName.parse(raw).value


@given(st.text(max_size=50), st.sampled_from(["\r", "\n", "\x00", "\u202e", "\x1b"]), st.text(max_size=50))
def test_names_with_control_or_format_characters_are_rejected(before: str, bad: str, after: str) -> None:
    with pytest.raises(InvalidInput):
        SubscriberName.parse(f"a{before}{bad}{after}b")


def test_overlong_names_are_rejected() -> None:
    with pytest.raises(InvalidInput):
        SubscriberName.parse("x" * (MAX_NAME_LENGTH + 1))


def test_names_may_hold_markup_which_is_escaped_on_output() -> None:
    assert SubscriberName.parse("<script>alert(1)</script>").value == "<script>alert(1)</script>"


@given(st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,62}\Z"))
def test_slugs_round_trip(raw: str) -> None:
    assert ListSlug.parse(raw.upper()).value == raw


@pytest.mark.parametrize("raw", ["", "-lead", "with space", "ünicode", "x" * 64, "semi;colon"])
def test_bad_slugs_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidInput):
        ListSlug.parse(raw)


def test_generated_tokens_are_256_bits_parse_back_and_differ() -> None:
    tokens = {Token.generate().value for _ in range(1000)}
    assert len(tokens) == 1000
    for value in list(tokens)[:20]:
        assert Token.parse(value) == Token(value)
        assert len(Token(value).digest) == 32


@given(st.text(max_size=100))
def test_only_token_shaped_strings_parse(raw: str) -> None:
    parsed = Token.parse(raw)
    if parsed is not None:
        assert len(raw) == 43
        assert set(raw) <= set(string.ascii_letters + string.digits + "-_")
