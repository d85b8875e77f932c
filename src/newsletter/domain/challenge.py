"""A solution to a sign-up's proof-of-work challenge, as the ALTCHA protocol sends it: base64 of a JSON object
{algorithm, challenge, number, salt, signature}. Parsed here, at the edge, into a value whose every field has
the right type and size; whether it is right is for the service (services/access/challenges.py) to say."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs

from newsletter.domain.subscriber import InvalidInput

ALGORITHM = "SHA-256"
# A payload is about 300 characters; anything much longer is not one.
MAX_PAYLOAD_CHARS = 2000
MAX_SALT_CHARS = 200
MAX_NUMBER = 10**9
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")

MISSING = "Please let the form check your browser (it needs JavaScript) and send it again."
BROKEN = "The browser check could not be read; please reload the page and try again."


@dataclass(frozen=True, slots=True)
class ChallengeSolution:
    challenge: str
    number: int
    salt: str
    signature: str
    expires_at: datetime

    @classmethod
    def parse(cls, raw: str) -> ChallengeSolution:
        """The solution in `raw`, or InvalidInput with a message that can be shown to the person."""
        raw = raw.strip()
        if not raw:
            raise InvalidInput(MISSING)
        if len(raw) > MAX_PAYLOAD_CHARS:
            raise InvalidInput(BROKEN)
        try:
            document = json.loads(base64.b64decode(raw, validate=True).decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):
            raise InvalidInput(BROKEN) from None
        if not isinstance(document, dict):
            raise InvalidInput(BROKEN)
        algorithm, challenge, number = (document.get(key) for key in ("algorithm", "challenge", "number"))
        salt, signature = document.get("salt"), document.get("signature")
        if (
            algorithm != ALGORITHM
            or not isinstance(challenge, str)
            or not _HEX_DIGEST.fullmatch(challenge)
            or not isinstance(signature, str)
            or not _HEX_DIGEST.fullmatch(signature)
            or not isinstance(number, int)
            or isinstance(number, bool)
            or not 0 <= number <= MAX_NUMBER
            or not isinstance(salt, str)
            or not 0 < len(salt) <= MAX_SALT_CHARS
        ):
            raise InvalidInput(BROKEN)
        return cls(challenge, number, salt, signature, _expiry(salt))


def _expiry(salt: str) -> datetime:
    """The `expires=` (Unix seconds) that every challenge this service issues carries in its salt."""
    _, _, query = salt.partition("?")
    values = parse_qs(query).get("expires", [])
    if len(values) != 1 or not values[0].isascii() or not values[0].isdigit() or len(values[0]) > 12:
        raise InvalidInput(BROKEN)
    return datetime.fromtimestamp(int(values[0]), UTC)
