"""The one path by which every email becomes MIME bytes.

An email is rendered once into a `MessageTemplate` (headers encoded, bodies rendered from Jinja2 templates)
with the per-recipient parts left as placeholders; `fill` then makes each recipient's message with a few
string replacements, so an issue to 100,000 people is rendered once, not 100,000 times.
"""

from __future__ import annotations

import binascii
import html as html_lib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email import message_from_bytes
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, default
from email.utils import formatdate, quote
from functools import cache
from typing import Any

import css_inline
import dkim
from markupsafe import Markup

from newsletter.templating import environment

CRLF = b"\r\n"
TEXT_PART = (
    b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
)
HTML_PART = b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
# Placeholders are plain alphanumerics: header folding and quoted-printable leave them whole. Templates are
# split at them once, when built, and filled in one pass: a value is never searched for placeholders, so an
# address that holds placeholder text is written as it is. The prefix is drawn at random by each process, so
# that no text written into a template (a subject, a list's name) can pass for one either.
PLACEHOLDER_PREFIX = f"NLPH{secrets.token_hex(8)}x"
_PLACEHOLDER = re.compile(f"({PLACEHOLDER_PREFIX}[A-Z]+x)")
RECIPIENT = f"{PLACEHOLDER_PREFIX}RECIPIENTx"
MESSAGE_ID = f"{PLACEHOLDER_PREFIX}MESSAGEIDx"
DATE = f"{PLACEHOLDER_PREFIX}DATEx"
LIST_ID = f"{PLACEHOLDER_PREFIX}LISTIDx"
UNSUBSCRIBE_URL = f"{PLACEHOLDER_PREFIX}UNSUBSCRIBEx"
_SPECIALS = '()<>[]:;@\\,."'  # RFC 5322 3.2.3: a phrase holding one of these must be quoted


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def render(template: str, **context: Any) -> RenderedEmail:
    """Render `email/<template>.subject.txt`, `.txt` and `.html` with the same context."""
    env = environment()
    return RenderedEmail(
        subject=env.get_template(f"email/{template}.subject.txt").render(context).strip(),
        text=env.get_template(f"email/{template}.txt").render(context),
        html=env.get_template(f"email/{template}.html").render(context),
    )


@cache
def _css_inliner() -> css_inline.CSSInliner:
    # Nothing is fetched: every style a newsletter has comes with its layout.
    return css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)


def newsletter_template(subject: str, html: str, text: str, *, sender: Address) -> MessageTemplate:
    """The one rendering of an issue: its HTML in the layout, the layout's CSS inlined, and its text.

    The worker sends what this builds and the admin preview shows it, so the preview is what is sent. The
    CSS is inlined here, once per issue, not once per message; the placeholders pass through untouched.
    """
    rendered = render(
        "newsletter",
        subject=subject,
        # Written by an admin: rendered from Markdown (raw HTML disabled) or given as HTML on purpose.
        content=Markup(html),  # noqa: S704
        text_content=text,
        unsubscribe_url=UNSUBSCRIBE_URL,
    )
    inlined = RenderedEmail(rendered.subject, rendered.text, _css_inliner().inline(rendered.html))
    headers = {
        "List-Id": LIST_ID,
        "List-Unsubscribe": f"<{UNSUBSCRIBE_URL}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    return MessageTemplate.build(inlined, sender=sender, headers=headers)


@dataclass(frozen=True, slots=True)
class Preview:
    subject: str
    html: str
    text: str


def preview(template: MessageTemplate, *, recipient: str, list_id: str, unsubscribe_url: str) -> Preview:
    """One recipient's message as it leaves, read back from its MIME bytes."""
    raw = template.fill(
        recipient=recipient,
        message_id=message_id("preview.invalid", "preview"),
        values={LIST_ID: list_id, UNSUBSCRIBE_URL: unsubscribe_url},
    )
    parsed = message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    html_part, text_part = parsed.get_body(("html",)), parsed.get_body(("plain",))
    assert html_part is not None and text_part is not None
    return Preview(str(parsed["Subject"]), html_part.get_content(), text_part.get_content())


def _split(text: str) -> tuple[str, ...]:
    """Text cut at its placeholders: literal text at even positions, placeholders at odd ones."""
    return tuple(_PLACEHOLDER.split(text))


def _fill(parts: tuple[str, ...], values: Mapping[str, str]) -> str:
    """One pass: each placeholder replaced by its value (one without a value stays as it is)."""
    return "".join(values.get(part, part) if index % 2 else part for index, part in enumerate(parts))


@dataclass(frozen=True, slots=True)
class EncodedBody:
    """A body in quoted-printable, encoded once: only the lines holding a placeholder are encoded per message.

    Quoted-printable works line by line, so encoded runs of whole lines can be joined as they are.
    """

    parts: tuple[bytes | tuple[str, ...], ...]
    escape: bool

    @classmethod
    def build(cls, body: str, *, escape: bool) -> EncodedBody:
        parts: list[bytes | tuple[str, ...]] = []
        static: list[str] = []
        for line in _crlf(body).splitlines(keepends=True):
            if PLACEHOLDER_PREFIX in line:
                if static:
                    parts.append(_qp("".join(static)))
                    static = []
                parts.append(_split(line))
            else:
                static.append(line)
        if static:
            parts.append(_qp("".join(static)))
        return cls(tuple(parts), escape)

    def fill(self, values: Mapping[str, str]) -> list[bytes]:
        if self.escape:
            values = {placeholder: html_lib.escape(value) for placeholder, value in values.items()}
        return [part if isinstance(part, bytes) else _qp(_fill(part, values)) for part in self.parts]


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    head: tuple[str, ...]
    text: EncodedBody
    html: EncodedBody
    boundary: bytes

    @classmethod
    def build(
        cls, rendered: RenderedEmail, *, sender: Address, headers: Mapping[str, str] | None = None
    ) -> MessageTemplate:
        """Encode the fixed headers once; the email package refuses CR or LF in any header value."""
        fixed = EmailMessage(policy=SMTP)
        fixed["From"] = sender
        fixed["Subject"] = rendered.subject
        for name, value in (headers or {}).items():
            fixed[name] = value
        encoded = "".join(SMTP.fold(name, value) for name, value in fixed.items())
        boundary = f"=_nl_{secrets.token_hex(12)}"
        head = (
            f"{encoded}To: {RECIPIENT}\r\nDate: {DATE}\r\nMessage-ID: {MESSAGE_ID}\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
        )
        return cls(
            head=_split(head),
            text=EncodedBody.build(rendered.text, escape=False),
            html=EncodedBody.build(rendered.html, escape=True),
            boundary=boundary.encode(),
        )

    def fill(self, *, recipient: str, message_id: str, values: Mapping[str, str] | None = None) -> bytes:
        """One recipient's message. `values` replace placeholders in headers and bodies (escaped for HTML)."""
        values = values or {}
        head = _fill(self.head, {**values, RECIPIENT: recipient, MESSAGE_ID: message_id, DATE: _date_now()})
        boundary = self.boundary
        return b"".join((
            head.encode(),
            b"--", boundary, CRLF,
            TEXT_PART,
            *self.text.fill(values), CRLF,
            b"--", boundary, CRLF,
            HTML_PART,
            *self.html.fill(values), CRLF,
            b"--", boundary, b"--", CRLF,
        ))  # fmt: skip


class DkimSigner:
    """Signs whole messages with DKIM (RFC 6376) over the headers receivers and RFC 8058 look at."""

    HEADERS = (
        b"from", b"to", b"subject", b"date", b"message-id", b"list-id", b"list-unsubscribe",
        b"list-unsubscribe-post",
    )  # fmt: skip

    def __init__(self, selector: str, domain: str, private_key: bytes) -> None:
        self.selector = selector.encode()
        self.domain = domain.encode()
        self.private_key = private_key
        try:
            self.sign(b"From: check@" + self.domain + b"\r\n\r\ncheck\r\n")
        except dkim.DKIMException as error:
            raise ValueError(f"the DKIM private key cannot sign: {error}") from None

    def sign(self, message: bytes) -> bytes:
        signature: bytes = dkim.sign(
            message, self.selector, self.domain, self.private_key,
            include_headers=list(self.HEADERS), linesep=b"\r\n",
        )  # fmt: skip
        return signature + message


def list_id(name: str, identifier: str) -> str:
    """A List-Id value (RFC 2919): the list's name as a phrase, encoded or quoted when it must be, so that a
    name holding non-ASCII text, an encoded word or angle brackets cannot pass for another list id."""
    if not name.isascii() or "=?" in name:
        phrase = Header(name, "utf-8", header_name="List-Id").encode(linesep="\r\n")
    elif any(char in _SPECIALS for char in name):
        phrase = f'"{quote(name)}"'
    else:
        phrase = name
    return f"{phrase} <{identifier}>"


def duration(seconds: float) -> str:
    """A validity period as a person reads it: "48 hours", "90 minutes", "1 hour"."""
    minutes = max(1, round(seconds / 60))
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def message_id(domain: str, unique: str) -> str:
    return f"<{unique}.{secrets.token_hex(6)}@{domain}>"


def to_mime(
    rendered: RenderedEmail, *, sender: Address, recipient: str, headers: Mapping[str, str] | None = None
) -> bytes:
    """A single message through the same path, for transactional emails."""
    template = MessageTemplate.build(rendered, sender=sender, headers=headers)
    return template.fill(recipient=recipient, message_id=message_id(sender.domain or "localhost", "tx"))


def _qp(text: str) -> bytes:
    return binascii.b2a_qp(text.encode(), istext=True)


def _crlf(body: str) -> str:
    return body.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


_date_cache: tuple[int, str] = (0, "")


def _date_now() -> str:
    """RFC 5322 date, formatted once per second rather than once per message."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]
