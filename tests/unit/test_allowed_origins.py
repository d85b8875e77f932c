"""NEWSLETTER_ALLOWED_ORIGINS: origins as a browser sends them in `Origin`; anything else is refused at
start-up, with a message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from newsletter.config import ConfigError, Settings, parse_origin


def test_no_origin_is_allowed_by_default() -> None:
    assert Settings(_env_file=None).allowed_origins == ()  # type: ignore[call-arg]


def test_origins_are_read_comma_separated_and_written_as_browsers_send_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "NEWSLETTER_ALLOWED_ORIGINS",
        " https://WWW.Example.com:443 , http://127.0.0.1:8081,,http://[::1]:80, https://www.example.com",
    )
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.allowed_origins == ("https://www.example.com", "http://127.0.0.1:8081", "http://[::1]")
    assert settings.redacted()["allowed_origins"] == list(settings.allowed_origins)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("https://example.com/", "no path"),
        ("https://example.com/signup", "no path"),
        ("https://example.com?x=1", "no path"),
        ("https://example.com#top", "no path"),
        ("*", "name each origin"),
        ("example.com", "scheme://host"),
        ("ftp://example.com", "scheme://host"),
        ("https://", "scheme://host"),
        ("https://user:pw@example.com", "no user name"),
        ("https://example.com:99999", "port"),
        ("https://bücher.example", "punycode"),
    ],
)
def test_anything_but_an_origin_is_refused_with_a_message(
    monkeypatch: pytest.MonkeyPatch, raw: str, why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_origin(raw)
    monkeypatch.setenv("NEWSLETTER_ALLOWED_ORIGINS", f"https://fine.example,{raw}")
    with pytest.raises(ValidationError, match="NEWSLETTER_ALLOWED_ORIGINS"):
        Settings(_env_file=None)  # type: ignore[call-arg]


hosts = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?(\.[a-zA-Z]{2,6}){0,2}", fullmatch=True)


@given(st.sampled_from(["http", "https", "HTTPS"]), hosts, st.one_of(st.none(), st.integers(1, 65535)))
def test_an_origin_written_as_a_browser_sends_it_reads_back_unchanged(
    scheme: str, host: str, port: int | None
) -> None:
    origin = parse_origin(f"{scheme}://{host}" + (f":{port}" if port is not None else ""))
    assert parse_origin(origin) == origin
    assert origin == origin.lower()
    assert not origin.endswith({"http": ":80", "https": ":443"}[scheme.lower()])  # the default port
