"""The retry policy, the failure classification and the one rendering path."""

from __future__ import annotations

import email
import email.policy
import random
from email.headerregistry import Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.services.sending.compose import RenderedEmail, render, to_mime
from newsletter.transports.base import SMTPError, classify_http_status, classify_smtp_error, parse_retry_after
from newsletter.worker.retry import RetryPolicy


@given(
    st.integers(min_value=1, max_value=50),
    st.floats(min_value=0.001, max_value=100),
    st.floats(min_value=0.001, max_value=10_000),
    st.randoms(),
)
def test_backoff_is_full_jitter_within_the_exponential_ceiling(
    attempts: int, base: float, cap: float, rng: random.Random
) -> None:
    policy = RetryPolicy(base, cap, max_attempts=100)
    delay = policy.delay(attempts, rng=rng)
    assert delay is not None
    assert 0 <= delay <= min(cap, base * 2 ** (attempts - 1))


@given(st.integers(min_value=1, max_value=20), st.floats(min_value=0, max_value=3600))
def test_retry_after_is_honoured(attempts: int, retry_after: float) -> None:
    delay = RetryPolicy(0.1, 1, max_attempts=100).delay(attempts, retry_after)
    assert delay is not None and delay >= retry_after


def test_no_delay_after_the_last_attempt() -> None:
    policy = RetryPolicy(1, 10, max_attempts=3)
    assert policy.delay(2) is not None
    assert policy.delay(3) is None


@pytest.mark.parametrize(
    ("error", "permanent", "rejected"),
    [
        (SMTPError("rcpt", 550, "no such user"), True, True),
        (SMTPError("rcpt", 451, "greylisted"), False, False),
        (SMTPError("data", 554, "spam"), True, False),
        (SMTPError("data", 452, "full"), False, False),
        (SMTPError("mail", 553, "bad sender"), True, False),
        (SMTPError("connect", 535, "bad credentials"), False, False),
        (SMTPError("connect", 554, "no service"), False, False),
        (ConnectionRefusedError("refused"), False, False),
        (ConnectionResetError("reset"), False, False),
        (TimeoutError(), False, False),
    ],
)
def test_smtp_failures_are_classified_in_one_place(
    error: BaseException, permanent: bool, rejected: bool
) -> None:
    failed = classify_smtp_error(error)
    assert (failed.permanent, failed.recipient_rejected) == (permanent, rejected)
    assert failed.error


@pytest.mark.parametrize(
    ("status", "permanent"), [(400, True), (401, True), (422, True), (429, False), (500, False), (503, False)]
)
def test_http_statuses_are_classified(status: int, permanent: bool) -> None:
    assert classify_http_status(status, "x", "7").permanent is permanent


def test_retry_after_accepts_seconds_and_dates() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_rendered_messages_are_multipart_alternative_with_the_required_headers() -> None:
    rendered = render(
        "confirmation", list_name="Weekly", link="https://x.example/c?token=abc", valid_for="48 hours"
    )
    raw = to_mime(rendered, sender=Address("News", "news", "example.com"), recipient="ada@example.com")
    message = email.message_from_bytes(raw, policy=email.policy.default)

    assert message.get_content_type() == "multipart/alternative"
    assert message["From"] == "News <news@example.com>"
    assert message["Message-ID"].endswith("@example.com>")
    assert message["Date"]
    assert "https://x.example/c?token=abc" in message.get_body(("plain",)).get_content()
    assert 'href="https://x.example/c?token=abc"' in message.get_body(("html",)).get_content()


def test_html_bodies_escape_what_they_show() -> None:
    rendered = render(
        "confirmation", list_name="<b>Weekly</b>", link="https://x/?a=1&b=2", valid_for="48 hours"
    )
    assert "<b>Weekly</b>" not in rendered.html
    assert "&lt;b&gt;Weekly&lt;/b&gt;" in rendered.html


# Text that is one line as far as the email package and str.splitlines() see it.
one_line = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40)


@given(one_line, st.sampled_from(["\r\n", "\n", "\r"]), one_line)
def test_no_header_value_can_carry_a_line_break(before: str, newline: str, after: str) -> None:
    sender = Address("N", "n", "example.com")
    injected = RenderedEmail(
        subject=f"{before}{newline}Bcc: victim@example.com{after}", text="t", html="<p>h</p>"
    )
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        to_mime(injected, sender=sender, recipient="ada@example.com")

    # The same words on one line are a subject like any other: accepted, folded, and no header of their own.
    subject = f"{before} Bcc: victim@example.com{after}"
    raw = to_mime(
        RenderedEmail(subject=subject, text="t", html="<p>h</p>"), sender=sender, recipient="ada@example.com"
    )
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Bcc"] is None
    assert message.get_all("To") == ["ada@example.com"]
    assert "Bcc: victim@example.com" in message["Subject"]


@given(
    st.lists(
        st.text(alphabet=st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), max_size=120),
        max_size=8,
    ),
    st.text(alphabet=st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), max_size=100),
    st.booleans(),
)
def test_bodies_encoded_once_decode_to_the_filled_text(lines: list[str], value: str, escape: bool) -> None:
    import binascii
    import html

    from newsletter.services.sending.compose import HTML_PART, PLACEHOLDER_PREFIX, TEXT_PART, MessageTemplate

    placeholder = f"{PLACEHOLDER_PREFIX}VALUEx"
    body = "\r\n".join([*lines[:2], f"before {placeholder} after", *lines[2:]]) + "\r\n"
    template = MessageTemplate.build(RenderedEmail("s", body, body), sender=Address("N", "n", "example.com"))
    raw = template.fill(
        recipient="ada@example.com", message_id="<m@example.com>", values={placeholder: value}
    )
    # The part's body as it was encoded: from its part headers to the boundary after it.
    encoded = raw.split(HTML_PART if escape else TEXT_PART, 1)[1].split(b"\r\n--=_nl_", 1)[0]

    expected = body.replace(placeholder, html.escape(value) if escape else value)
    assert binascii.a2b_qp(encoded).decode() == expected
    assert all(len(line) <= 78 for line in encoded.split(b"\r\n"))
