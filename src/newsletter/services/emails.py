"""The one path by which every email becomes MIME bytes.

An email is rendered once into a `MessageTemplate` (headers encoded, bodies rendered from Jinja2 templates)
with the per-recipient parts left as placeholders; `fill` then makes each recipient's message with a few
string replacements, so an issue to 100,000 people is rendered once, not 100,000 times.
"""

from __future__ import annotations

import binascii
import html as html_lib
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
# Placeholders are plain alphanumerics: header folding and quoted-printable leave them whole.
PLACEHOLDER_PREFIX = "NLPHx"
RECIPIENT = "NLPHxRECIPIENTx"
MESSAGE_ID = "NLPHxMESSAGEIDx"
DATE = "NLPHxDATEx"
LIST_ID = "NLPHxLISTIDx"
UNSUBSCRIBE_URL = "NLPHxUNSUBSCRIBEx"
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


@dataclass(frozen=True, slots=True)
class EncodedBody:
    """A body in quoted-printable, encoded once: only the lines holding a placeholder are encoded per message.

    Quoted-printable works line by line, so encoded runs of whole lines can be joined as they are.
    """

    parts: tuple[bytes | str, ...]
    escape: bool

    @classmethod
    def build(cls, body: str, *, escape: bool) -> EncodedBody:
        parts: list[bytes | str] = []
        static: list[str] = []
        for line in _crlf(body).splitlines(keepends=True):
            if PLACEHOLDER_PREFIX in line:
                if static:
                    parts.append(_qp("".join(static)))
                    static = []
                parts.append(line)
            else:
                static.append(line)
        if static:
            parts.append(_qp("".join(static)))
        return cls(tuple(parts), escape)

    def fill(self, values: Mapping[str, str]) -> list[bytes]:
        filled = []
        for part in self.parts:
            if isinstance(part, bytes):
                filled.append(part)
                continue
            for placeholder, value in values.items():
                part = part.replace(placeholder, html_lib.escape(value) if self.escape else value)
            filled.append(_qp(part))
        return filled


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    head: str
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
            head=head,
            text=EncodedBody.build(rendered.text, escape=False),
            html=EncodedBody.build(rendered.html, escape=True),
            boundary=boundary.encode(),
        )

    def fill(self, *, recipient: str, message_id: str, values: Mapping[str, str] | None = None) -> bytes:
        """One recipient's message. `values` replace placeholders in headers and bodies (escaped for HTML)."""
        values = values or {}
        head = self.head.replace(RECIPIENT, recipient, 1).replace(MESSAGE_ID, message_id, 1)
        head = head.replace(DATE, _date_now(), 1)
        for placeholder, value in values.items():
            head = head.replace(placeholder, value)
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
