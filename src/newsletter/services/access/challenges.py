"""Proof of work on sign-ups, by the ALTCHA protocol (altcha.org): the server hands out a challenge, the
SHA-256 of a salt and a secret number below `maxnumber`, signed with an HMAC of its key; the browser tries
numbers until it finds the one, and sends the solution with the sign-up. A solution is checked here: its
signature, its expiry (carried in the salt, so the server keeps nothing until a solution is spent) and that it
was not spent before (the spent ones are kept in PostgreSQL until they expire)."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

from altcha.v1 import SHA256, ChallengeOptions, create_challenge, hash_hex, hmac_hex

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.challenge import ChallengeSolution
from newsletter.domain.subscriber import InvalidInput
from newsletter.telemetry import SIGNUP_CHALLENGES

WRONG = "The browser check did not pass; please reload the page and try again."
EXPIRED = "The browser check has expired; please send the form again."
SPENT = "This browser check was already used; please send the form again."


class ChallengeRefused(Exception):
    """A solution that is missing, wrong, expired or spent; the message can be shown to the person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def challenge_key(secret_key: bytes) -> bytes:
    """The HMAC key of challenges, derived from the app's secret key so that no other signature of this
    service (unsubscribe links, sessions) can be passed off as a challenge's, nor the other way round."""
    return hmac.digest(secret_key, b"signup-challenge", "sha256")


def issue(key: bytes, max_number: int, ttl_seconds: int) -> dict[str, Any]:
    """A new challenge, as the ALTCHA widget and the form's script read it."""
    created = create_challenge(
        ChallengeOptions(
            algorithm=SHA256,
            max_number=max_number,
            hmac_key=key,
            expires=datetime.now(UTC) + timedelta(seconds=ttl_seconds),
        )
    )
    SIGNUP_CHALLENGES.labels("issued").inc()
    return {
        "algorithm": created.algorithm,
        "challenge": created.challenge,
        "maxnumber": created.max_number,
        "salt": created.salt,
        "signature": created.signature,
    }


async def redeem(db: Database, key: bytes, raw: str) -> None:
    """Accept the solution in `raw` once, or raise ChallengeRefused saying why not."""
    try:
        solution = ChallengeSolution.parse(raw)
    except InvalidInput as error:
        _refused("unreadable")
        raise ChallengeRefused(str(error)) from None
    if solution.expires_at <= datetime.now(UTC):
        _refused("expired")
        raise ChallengeRefused(EXPIRED)
    if not _signed(solution, key):
        _refused("wrong")
        raise ChallengeRefused(WRONG)
    if not await db.fetchval(Q.challenge_spend, solution.signature, solution.expires_at):
        _refused("replayed")
        raise ChallengeRefused(SPENT)
    SIGNUP_CHALLENGES.labels("verified").inc()


def _signed(solution: ChallengeSolution, key: bytes) -> bool:
    """Whether the number solves the challenge and the challenge is one this service signed. As the altcha
    library's verify_solution_v1, with the digests compared in constant time."""
    salt = solution.salt if solution.salt.endswith("&") else solution.salt + "&"
    challenge = hash_hex(SHA256, f"{salt}{solution.number}".encode())
    signature = hmac_hex(SHA256, challenge.encode(), key)
    right_number = hmac.compare_digest(challenge, solution.challenge)
    return hmac.compare_digest(signature, solution.signature) and right_number


def _refused(reason: str) -> None:
    SIGNUP_CHALLENGES.labels(f"refused_{reason}").inc()
