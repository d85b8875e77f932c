"""The Idempotency-Key protocol of the API's POSTs, as one small state machine.

A request with a key either starts (its key is claimed in the request's transaction, and its response is
saved with the change it made, in the same transaction), or replays the response saved for the same key and
the same request. The same key with another request is refused (422); a repeat arriving while the first still
runs waits for it (a row lock, bounded by NEWSLETTER_IDEMPOTENCY_WAIT_SECONDS) and then replays, or is refused
(409). Keys belong to the API token that used them, and are kept 24 hours.

    next_step = await begin(conn, claim)     # Start or Replay; KeyReused or StillRunning raised
    ... the change ...
    await save(conn, claim, status, body)
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

import asyncpg

from newsletter.db.queries import Q

# Any printable ASCII, spaces included (draft-ietf-httpapi-idempotency-key-header), up to 255 characters.
_KEY = re.compile(r"[\x20-\x7e]{1,255}")


class MalformedKey(ValueError):
    pass


class KeyReused(Exception):
    """The key was used for a different request."""


class StillRunning(Exception):
    """A request with this key is still running, past the time a repeat waits for it."""


class Claim(NamedTuple):
    token_id: int
    key: str
    fingerprint: bytes


class Start:
    """Nothing was done under this key yet: do the work, then save its response."""


class Replay(NamedTuple):
    """The request was done: answer what it answered."""

    status: int
    body: bytes


def parse_key(raw: str) -> str:
    if not _KEY.fullmatch(raw):
        raise MalformedKey("Idempotency-Key must be 1 to 255 printable ASCII characters, spaces included.")
    return raw


def fingerprint(method: str, target: str, content: bytes) -> bytes:
    """What makes two requests the same: the method, the target (path, and query when it matters) and the
    content (the body, or what the handler read of an upload)."""
    return hashlib.sha256(b"\n".join([method.encode(), target.encode(), content])).digest()


async def begin(conn: asyncpg.Connection, claim: Claim, *, wait_seconds: float) -> Start | Replay:
    """Inside the request's transaction: claim the key, or find the response saved under it."""
    await conn.execute(Q.idempotency_wait_at_most, str(int(wait_seconds * 1000)))
    await conn.execute(Q.idempotency_expire, claim.token_id, claim.key)
    try:
        claimed = await conn.fetchval(Q.idempotency_claim, claim.token_id, claim.key, claim.fingerprint)
    except asyncpg.LockNotAvailableError:
        raise StillRunning from None
    # Only the wait for the key is bounded; the request itself may wait on locks as usual.
    await conn.execute(Q.idempotency_wait_as_usual)
    if claimed:
        return Start()
    saved = await conn.fetchrow(Q.idempotency_saved, claim.token_id, claim.key)
    if saved["fingerprint"] != claim.fingerprint:
        raise KeyReused
    return Replay(saved["response_status"], saved["response_body"])


async def save(conn: asyncpg.Connection, claim: Claim, status: int, body: bytes) -> None:
    """The response to replay, written in the transaction of the change it answers."""
    await conn.execute(Q.idempotency_store, claim.token_id, claim.key, status, body)
