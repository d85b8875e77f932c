"""The one path by which every email is rendered into MIME bytes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Any

from newsletter.templating import environment


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def render(template: str, **context: Any) -> RenderedEmail:
    """Render `email/<template>.subject|.txt|.html` with the same context."""
    env = environment()
    return RenderedEmail(
        subject=env.get_template(f"email/{template}.subject.txt").render(context).strip(),
        text=env.get_template(f"email/{template}.txt").render(context),
        html=env.get_template(f"email/{template}.html").render(context),
    )


def to_mime(
    rendered: RenderedEmail,
    *,
    sender: Address,
    recipient: str,
    extra_headers: dict[str, str] | None = None,
) -> bytes:
    """A multipart/alternative message; the email package refuses CR/LF in any header value."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=sender.domain or "localhost")
    for name, value in (extra_headers or {}).items():
        message[name] = value
    message.set_content(rendered.text, cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    return message.as_bytes()
