"""The one path by which every email becomes MIME bytes.

An email is rendered once into a `MessageTemplate` (headers encoded, bodies rendered from Jinja2 templates) with
the per-recipient parts left as placeholders; `fill` then makes each recipient's message with a few string
replacements and the C quoted-printable encoder, so an issue to 100,000 people is rendered once, not 100,000 times.
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

from newsletter.templating import environment

CRLF = b"\r\n"
# Placeholders are plain alphanumerics: header folding and quoted-printable leave them whole.
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
class MessageTemplate:
    head: str
    text: str
    html: str
    boundary: str

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
        return cls(head=head, text=_crlf(rendered.text), html=_crlf(rendered.html), boundary=boundary)

    def fill(self, *, recipient: str, message_id: str, values: Mapping[str, str] | None = None) -> bytes:
        """One recipient's message. `values` replace placeholders in headers and bodies (escaped for HTML)."""
        head = self.head.replace(RECIPIENT, recipient, 1).replace(MESSAGE_ID, message_id, 1)
        head = head.replace(DATE, _date_now(), 1)
        text, html = self.text, self.html
        for placeholder, value in (values or {}).items():
            head = head.replace(placeholder, value)
            text = text.replace(placeholder, value)
            html = html.replace(placeholder, html_lib.escape(value))
        boundary = self.boundary.encode()
        return b"".join((
            head.encode(),
            b"--", boundary, CRLF,
            b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n',
            binascii.b2a_qp(text.encode(), istext=True), CRLF,
            b"--", boundary, CRLF,
            b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n',
            binascii.b2a_qp(html.encode(), istext=True), CRLF,
            b"--", boundary, b"--", CRLF,
        ))  # fmt: skip


def message_id(domain: str, unique: str) -> str:
    return f"<{unique}.{secrets.token_hex(6)}@{domain}>"


def to_mime(
    rendered: RenderedEmail, *, sender: Address, recipient: str, headers: Mapping[str, str] | None = None
) -> bytes:
    """A single message through the same path, for transactional emails."""
    template = MessageTemplate.build(rendered, sender=sender, headers=headers)
    return template.fill(recipient=recipient, message_id=message_id(sender.domain or "localhost", "tx"))


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
