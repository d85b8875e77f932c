"""Values parsed at the edge: the rest of the code only ever sees these, never raw input."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

MAX_NAME_LENGTH = 256
MAX_EMAIL_LENGTH = 254
MAX_LOCAL_PART_LENGTH = 64


class InvalidInput(ValueError):
    """A value a person typed cannot be used; the message is safe to show them."""


@dataclass(frozen=True, slots=True)
class SubscriberEmail:
    value: str

    @classmethod
    def parse(cls, raw: str) -> SubscriberEmail:
        candidate = raw.strip()
        if not candidate:
            raise InvalidInput("Please enter your email address.")
        if len(candidate) > MAX_EMAIL_LENGTH:
            raise InvalidInput("This email address is too long.")
        try:
            # No DNS lookup in the request path: deliverability shows when the confirmation email is sent.
            # Strict: a local part over RFC 5321's 64 characters is refused, as mail servers refuse it.
            parsed = validate_email(candidate, check_deliverability=False, allow_smtputf8=True, strict=True)
        except EmailNotValidError as error:
            raise InvalidInput(f"This is not a valid email address: {error}") from None
        return cls(parsed.normalized)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class SubscriberName:
    value: str

    @classmethod
    def parse(cls, raw: str) -> SubscriberName:
        candidate = unicodedata.normalize("NFC", raw.strip())
        if len(candidate) > MAX_NAME_LENGTH:
            raise InvalidInput(f"Names are limited to {MAX_NAME_LENGTH} characters.")
        # Control characters and line or paragraph separators (CR, LF, U+2028 among them) could break a
        # header or a log line; format characters such as right-to-left overrides make a name display as
        # something else.
        if any(
            unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for char in candidate
        ):
            raise InvalidInput("Names cannot contain control characters.")
        return cls(candidate)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class ListSlug:
    value: str

    @classmethod
    def parse(cls, raw: str) -> ListSlug:
        candidate = raw.strip().lower()
        if not (
            0 < len(candidate) <= 63
            and candidate[0].isascii()
            and candidate[0].isalnum()
            and all(char.isascii() and (char.isalnum() or char == "-") for char in candidate)
        ):
            raise InvalidInput("Unknown list.")
        return cls(candidate)

    def __str__(self) -> str:
        return self.value
