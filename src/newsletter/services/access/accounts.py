"""The people who run the service from the browser: argon2id passwords, and sessions stored as hashes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cache

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.subscriber import SubscriberEmail
from newsletter.domain.tokens import Token
from newsletter.services.errors import Conflict, Invalid

log = structlog.get_logger(__name__)

PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class AdminUser:
    id: int
    email: str


@cache
def _hasher() -> PasswordHasher:
    # argon2-cffi's defaults are argon2id with RFC 9106's low-memory profile (t=3, m=64 MiB, p=4).
    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified in place of a real hash when no user has the address, so both failures take as long."""
    return _hasher().hash("no user has this password")


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher().verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def _hash(password: str) -> str:
    return _hasher().hash(password)


def check_new_password(password: str, confirmation: str) -> None:
    if password != confirmation:
        raise Invalid("The two new passwords do not match.")
    if len(password) < PASSWORD_MIN_LENGTH:
        raise Invalid(f"A password needs at least {PASSWORD_MIN_LENGTH} characters.")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise Invalid(f"A password has at most {PASSWORD_MAX_LENGTH} characters.")


async def create_user(db: Database, email: SubscriberEmail, password: str) -> AdminUser:
    check_new_password(password, password)
    hashed = await asyncio.to_thread(_hash, password)
    user_id = await db.fetchval(Q.admin_user_insert, email.value, hashed)
    if user_id is None:
        raise Conflict(f"an admin user with the address {email.value} exists already")
    log.info("admin user created", user_id=user_id)
    return AdminUser(user_id, email.value)


async def authenticate(db: Database, email: str, password: str) -> AdminUser | None:
    """The user with this address and password, or None; an unknown address costs the same time as a wrong
    password, so that the answer's timing does not tell which addresses have an account."""
    row = await db.fetchrow(Q.admin_user_by_email, email.strip()) if email.strip() else None
    hashed = row["password_hash"] if row is not None else _dummy_hash()
    valid = await asyncio.to_thread(_verify, hashed, password[:PASSWORD_MAX_LENGTH])
    if row is None or not valid:
        return None
    if _hasher().check_needs_rehash(hashed):
        await db.execute(Q.admin_user_set_password, row["id"], await asyncio.to_thread(_hash, password))
    return AdminUser(row["id"], row["email"])


async def start_session(
    db: Database, user: AdminUser, *, lifetime_seconds: float, ip: str | None, user_agent: str | None
) -> str:
    """A new session (never one the browser brought along); the returned id is what the cookie holds."""
    session_id = Token.generate()
    await db.execute(
        Q.admin_session_start,
        session_id.digest,
        user.id,
        lifetime_seconds,
        ip,
        (user_agent or "")[:500],
    )
    log.info("admin logged in", user_id=user.id)
    return session_id.value


async def session_user(db: Database, raw_session_id: str) -> AdminUser | None:
    session_id = Token.parse(raw_session_id)
    if session_id is None:
        return None
    row = await db.fetchrow(Q.admin_session_get, session_id.digest)
    return AdminUser(row["user_id"], row["email"]) if row is not None else None


async def end_session(db: Database, raw_session_id: str) -> None:
    session_id = Token.parse(raw_session_id)
    if session_id is not None:
        await db.execute(Q.admin_session_end, session_id.digest)


async def change_password(
    db: Database, user: AdminUser, raw_session_id: str, current: str, new: str, confirmation: str
) -> None:
    """Check the current password, set the new one, and end every other session of the user."""
    check_new_password(new, confirmation)
    row = await db.fetchrow(Q.admin_user_by_id, user.id)
    if row is None or not await asyncio.to_thread(
        _verify, row["password_hash"], current[:PASSWORD_MAX_LENGTH]
    ):
        raise Invalid("The current password is not right.")
    session_id = Token.parse(raw_session_id)
    assert session_id is not None
    hashed = await asyncio.to_thread(_hash, new)
    async with db.transaction() as conn:
        await conn.execute(Q.admin_user_set_password, user.id, hashed)
        ended = await conn.execute(Q.admin_sessions_end_others, user.id, session_id.digest)
    log.info("admin password changed", user_id=user.id, other_sessions_ended=ended.split()[-1])
