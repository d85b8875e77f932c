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
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from typing import Any

import dkim

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
