"""Configuration parsing and the rules of production mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from newsletter.config import ConfigError, EmailURL, Settings, redact_url


def test_the_defaults_suit_a_laptop(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    assert settings.email.scheme == "file"
    assert settings.email.path == tmp_path.resolve() / "outbox"
    assert settings.base_url == "http://127.0.0.1:8000"
    assert settings.sender_address.addr_spec == "newsletter@localhost"


def test_a_generated_secret_key_is_kept_in_the_data_dir(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).resolved_secret_key()
    second = Settings(data_dir=tmp_path).resolved_secret_key()
    assert first == second
    assert len(first) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", EmailURL("smtp", "mail.example.com", 25)),
        (
            "smtp://u%40x:p%3Aw@mail.example.com:587?tls=starttls",
            EmailURL("smtp", "mail.example.com", 587, "u@x", "p:w", "starttls"),
        ),
        ("smtp://mail.example.com?tls=ssl", EmailURL("smtp", "mail.example.com", 465, tls="ssl")),
        ("file:///var/mail/out", EmailURL("file", path=Path("/var/mail/out"))),
        ("postmark://tok-123@", EmailURL("postmark", "api.postmarkapp.com", password="tok-123")),
        ("postmark://tok-123@127.0.0.1:9000", EmailURL("postmark", "127.0.0.1:9000", password="tok-123")),
    ],
)
def test_email_urls_parse(url: str, expected: EmailURL) -> None:
    assert EmailURL.parse(url) == expected


@pytest.mark.parametrize(
    "url", ["smtp://", "smtp://host?tls=maybe", "file://", "postmark://", "sendmail://x"]
)
def test_bad_email_urls_are_refused_with_a_message(url: str) -> None:
    with pytest.raises(ConfigError, match="NEWSLETTER_EMAIL_URL"):
        EmailURL.parse(url)


def test_redaction_hides_passwords_and_tokens() -> None:
    assert EmailURL.parse("smtp://me:secret@h:25").redacted() == "smtp://me:***@h:25"
    assert "tok" not in EmailURL.parse("postmark://tok@").redacted()
    assert redact_url("postgresql://app:secret@db/news") == "postgresql://app:***@db/news"


@given(st.text(alphabet=st.characters(codec="ascii", exclude_characters="@/:?#[]%"), min_size=1, max_size=20))
def test_redacted_configuration_never_contains_the_password(password: str) -> None:
    database_password, smtp_password, secret = (f"Qj{password}{marker}" for marker in ("Xd", "Xs", "Xk"))
    settings = Settings(
        database_url=f"postgresql://app:{database_password}@db/news",
        email_url=f"smtp://me:{smtp_password}@mail.example.com:25",
        secret_key=secret * 4,
    )
    shown = str(settings.redacted())
    for hidden in (database_password, smtp_password, secret):
        assert hidden not in shown


def test_production_refuses_generated_secrets_plain_http_and_the_embedded_database() -> None:
    settings = Settings(env="production", base_url="http://news.example.com", database_url=None)
    with pytest.raises(ConfigError) as error:
        settings.check_production()
    message = str(error.value)
    assert "NEWSLETTER_SECRET_KEY" in message
    assert "https" in message
    assert "DATABASE_URL" in message


def test_production_accepts_a_complete_configuration() -> None:
    Settings(
        env="production",
        base_url="https://news.example.com",
        secret_key="k" * 40,
        database_url="postgresql://db/news",
    ).check_production()


@pytest.mark.parametrize(
    "field", [{"base_url": "ftp://x"}, {"sender": "no address"}, {"sender": "A <a@b.c>\r\nX: y"}]
)
def test_invalid_values_are_refused(field: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Settings(**field)
