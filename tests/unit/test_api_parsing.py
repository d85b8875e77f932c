"""The admin API's parsing of what clients send, without a server: cursors."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from newsletter.web.api.common import ApiError, parse_cursor


@given(st.text(max_size=25))
def test_the_cursor_parser_takes_ascii_digits_only(raw: str) -> None:
    try:
        parsed = parse_cursor(raw)
    except ApiError as error:
        assert error.status == 422
        assert not (raw.isascii() and raw.isdigit() and 0 < len(raw) <= 18)
    else:
        assert raw.isascii() and raw.isdigit() and len(raw) <= 18
        assert parsed == int(raw)
