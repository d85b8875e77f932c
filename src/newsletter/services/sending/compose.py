"""The one composer: every email the service sends becomes its message here, and only here.

A confirmation, a newsletter (a copy of an issue to one person of a list), a test copy: the composer sets the
headers (From, To, Subject, Date, Message-ID, List-Id, List-Unsubscribe and List-Unsubscribe-Post), the links
(confirmation, unsubscribe), the VERP return path and the DKIM signature. The worker sends what it composes,
and the admin preview shows what it composes, so the preview is what is sent but for the recipient.

An issue is rendered once into a `MessageTemplate` (headers encoded, bodies rendered from Jinja2 templates and
quoted-printable encoded) with the per-recipient parts left as placeholders; each recipient's message is then
filled in one pass, so an issue to 100,000 people is rendered once, not 100,000 times.
"""

from __future__ import annotations

import binascii
import html as html_lib
import itertools
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from email import message_from_bytes
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, default
from email.utils import formatdate, quote
from functools import cache
from typing import Any, NamedTuple
from urllib.parse import urlencode

import css_inline
import dkim
from markupsafe import Markup

from newsletter.config import Settings
from newsletter.domain.tokens import PreferencesToken, Token, UnsubscribeToken
from newsletter.domain.verp import verp_address
from newsletter.templating import environment
from newsletter.transports.base import OutgoingEmail

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
PREFERENCES_URL = f"{PLACEHOLDER_PREFIX}PREFERENCESx"
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


def _newsletter_template(subject: str, html: str, text: str, *, sender: Address) -> MessageTemplate:
    """The one rendering of an issue: its HTML in the layout, the layout's CSS inlined, and its text. The
    CSS is inlined here, once per issue, not once per message; the placeholders pass through untouched."""
    rendered = render(
        "newsletter",
        subject=subject,
        # Written by an admin: rendered from Markdown (raw HTML disabled) or given as HTML on purpose.
        content=Markup(html),  # noqa: S704
        text_content=text,
        unsubscribe_url=UNSUBSCRIBE_URL,
        preferences_url=PREFERENCES_URL,
    )
    inlined = RenderedEmail(rendered.subject, rendered.text, _css_inliner().inline(rendered.html))
    headers = {
        "List-Id": LIST_ID,
        "List-Unsubscribe": f"<{UNSUBSCRIBE_URL}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    return MessageTemplate.build(inlined, sender=sender, headers=headers)


class Preview(NamedTuple):
    subject: str
    html: str
    text: str


def _read_back(raw: bytes) -> Preview:
    """A message as a mail client reads it, from its bytes."""
    parsed = message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    html_part, text_part = parsed.get_body(("html",)), parsed.get_body(("plain",))
    assert html_part is not None and text_part is not None
    return Preview(str(parsed["Subject"]), html_part.get_content(), text_part.get_content())


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy of an issue: its delivery, and the person and list it goes to (none for a test copy)."""

    delivery_id: int
    attempt: int
    recipient: str
    subscriber_id: int | None = None
    list_id: int | None = None
    list_slug: str | None = None
    list_name: str | None = None


class Composer:
    """Builds every message from the settings: sender, base URL, secret key, VERP and DKIM."""

    def __init__(self, settings: Settings) -> None:
        self._sender = settings.sender_address
        self._domain = self._sender.domain or "localhost"
        self._base_url = settings.base_url
        self._secret_key = settings.resolved_secret_key().encode()
        self._verp = settings.verp_return_path
        self._confirmation_validity = duration(settings.confirmation_ttl_hours * 3600)
        self._list_headers: dict[tuple[str, str | None], str] = {}
        key = settings.dkim_key()
        self._dkim = (
            DkimSigner(settings.dkim_selector, settings.dkim_domain or self._domain, key)
            if settings.dkim_selector and key
            else None
        )

    @property
    def signs(self) -> bool:
        return self._dkim is not None

    def confirmation(
        self, delivery_id: int, recipient: str, list_name: str | None, token: Token
    ) -> OutgoingEmail:
        """The confirmation email of a sign-up: the link and nothing a stranger could have typed."""
        link = f"{self._base_url}/subscriptions/confirm?{urlencode({'token': token.value})}"
        rendered = render(
            "confirmation",
            list_name=list_name or "our newsletter",
            link=link,
            valid_for=self._confirmation_validity,
        )
        message = to_mime(rendered, sender=self._sender, recipient=recipient)
        return OutgoingEmail(delivery_id, self.return_path(delivery_id), recipient, message)

    def issue(self, subject: str, html: str, text: str) -> MessageTemplate:
        """An issue rendered once, ready to be filled for each copy."""
        return _newsletter_template(subject, html, text, sender=self._sender)

    def copy(self, template: MessageTemplate, copy: Copy) -> OutgoingEmail:
        """One person's copy of an issue: their address, their list's List-Id and their unsubscribe link."""
        if copy.list_slug is not None and copy.list_id is not None and copy.subscriber_id is not None:
            list_header = self.list_header(copy.list_slug, copy.list_name)
            unsubscribe = self.unsubscribe_url(copy.subscriber_id, copy.list_id)
            preferences = self.preferences_url(copy.subscriber_id)
        else:  # a test copy: nobody to unsubscribe
            list_header, unsubscribe, preferences = (
                f"Test <test.{self._domain}>",
                f"{self._base_url}/unsubscribe/test-copy",
                f"{self._base_url}/preferences/test-copy",
            )
        message = self._fill(
            template,
            copy.recipient,
            f"{copy.delivery_id}.{copy.attempt}",
            list_header,
            unsubscribe,
            preferences,
        )
        return OutgoingEmail(copy.delivery_id, self.return_path(copy.delivery_id), copy.recipient, message)

    def preview(
        self, subject: str, html: str, text: str, *, recipient: str, to_list: tuple[str, str] | None
    ) -> Preview:
        """An issue as `recipient` would receive it from `to_list` (slug, name), composed as every copy is:
        the same bytes but for the recipient's own parts (address, message id, and an unsubscribe link that
        leads nowhere)."""
        list_header = self.list_header(*to_list) if to_list else f"Preview <preview.{self._domain}>"
        raw = self._fill(
            self.issue(subject, html, text),
            recipient,
            "preview",
            list_header,
            f"{self._base_url}/unsubscribe/preview",
            f"{self._base_url}/preferences/preview",
        )
        return _read_back(raw)

    def _fill(
        self,
        template: MessageTemplate,
        recipient: str,
        unique: str,
        list_header: str,
        unsubscribe: str,
        preferences: str,
    ) -> bytes:
        return template.fill(
            recipient=recipient,
            message_id=message_id(self._domain, unique),
            values={LIST_ID: list_header, UNSUBSCRIBE_URL: unsubscribe, PREFERENCES_URL: preferences},
        )

    def list_header(self, slug: str, name: str | None) -> str:
        """The List-Id of a list (RFC 2919): its name, and its slug on the sender's domain."""
        header = self._list_headers.get((slug, name))
        if header is None:
            header = self._list_headers[slug, name] = list_id(name or slug, f"{slug}.{self._domain}")
        return header

    def unsubscribe_url(self, subscriber_id: int, list_id: int) -> str:
        token = UnsubscribeToken(subscriber_id, list_id).sign(self._secret_key)
        return f"{self._base_url}/unsubscribe/{token}"

    def preferences_url(self, subscriber_id: int) -> str:
        """The person's "manage your subscription" page."""
        return f"{self._base_url}/preferences/{PreferencesToken(subscriber_id).sign(self._secret_key)}"

    def return_path(self, delivery_id: int) -> str:
        """The envelope sender: the delivery's own VERP address, or the sender's address."""
        if not self._verp:
            return self._sender.addr_spec
        return verp_address(delivery_id, self._domain, secret_key=self._secret_key)

    def sign_all(self, unsigned: list[OutgoingEmail]) -> list[OutgoingEmail]:
        """The messages DKIM-signed, when a key is configured (RSA in pure Python: call it off the loop)."""
        if self._dkim is None:
            return unsigned
        dkim_signer = self._dkim
        return [replace(email, message=dkim_signer.sign(email.message)) for email in unsigned]


def _split(text: str) -> tuple[str, ...]:
    """Text cut at its placeholders: literal text at even positions, placeholders at odd ones."""
    return tuple(_PLACEHOLDER.split(text))


def _fill(parts: tuple[str, ...], values: Mapping[str, str], *, escape: bool = False) -> str:
    """One pass: each placeholder replaced by its value (escaped for HTML); one without a value stays."""
    filled = list(parts)
    for index in range(1, len(filled), 2):
        value = values.get(filled[index])
        if value is not None:
            filled[index] = html_lib.escape(value) if escape else value
    return "".join(filled)


@dataclass(frozen=True, slots=True)
class _Value:
    """A header's per-recipient value: written as it is."""

    placeholder: str


@dataclass(frozen=True, slots=True)
class _Line:
    """A body line holding a per-recipient value: filled (escaped for HTML) and quoted-printable encoded
    for each message; quoted-printable works line by line, so the encoded lines around it stay as they are."""

    parts: tuple[str, ...]
    html: bool


def _pieces(head: str, text: str, html: str, boundary: bytes) -> tuple[bytes | _Value | _Line, ...]:
    """The whole message as fixed bytes and the few pieces filled for each recipient."""
    pieces: list[bytes | _Value | _Line] = []

    def fixed(data: bytes) -> None:
        if pieces and isinstance(pieces[-1], bytes):
            pieces[-1] += data
        elif data:
            pieces.append(data)

    for index, part in enumerate(_split(head)):
        if index % 2:
            pieces.append(_Value(part))
        else:
            fixed(part.encode())
    for part_header, body, is_html in ((TEXT_PART, text, False), (HTML_PART, html, True)):
        fixed(b"--" + boundary + CRLF + part_header)
        static: list[str] = []
        for line in _crlf(body).splitlines(keepends=True):
            if PLACEHOLDER_PREFIX in line:
                fixed(_qp("".join(static)) if static else b"")
                static = []
                pieces.append(_Line(_split(line), is_html))
            else:
                static.append(line)
        fixed((_qp("".join(static)) if static else b"") + CRLF)
    fixed(b"--" + boundary + b"--" + CRLF)
    return tuple(pieces)


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """A message rendered and encoded once, with its per-recipient values left as placeholders."""

    pieces: tuple[bytes | _Value | _Line, ...]

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
        return cls(_pieces(head, rendered.text, rendered.html, boundary.encode()))

    def fill(self, *, recipient: str, message_id: str, values: Mapping[str, str] | None = None) -> bytes:
        """One recipient's message. `values` replace placeholders in headers and bodies (escaped for HTML)."""
        given = {**(values or {}), RECIPIENT: recipient, MESSAGE_ID: message_id, DATE: _date_now()}
        filled: list[bytes] = []
        for piece in self.pieces:
            if isinstance(piece, bytes):
                filled.append(piece)
            elif isinstance(piece, _Value):
                filled.append(given.get(piece.placeholder, piece.placeholder).encode())
            else:
                filled.append(_qp(_fill(piece.parts, given, escape=piece.html)))
        return b"".join(filled)


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


# Message-IDs are unique by what names the email (a delivery and its attempt), this process, and a count: no
# random bytes to draw for each message.
_PROCESS = secrets.token_hex(6)
_messages = itertools.count(1)


def message_id(domain: str, unique: str) -> str:
    return f"<{unique}.{_PROCESS}{next(_messages):x}@{domain}>"


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
