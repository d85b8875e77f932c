"""Admin API tokens: shown once, stored as SHA-256 hashes."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.vocabulary import TokenScope

TOKEN_PREFIX = "nl_"  # noqa: S105 - a visible prefix, not a secret


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    name: str
    scope: str


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_token(db: Database, name: str, scope: TokenScope = TokenScope.ADMIN) -> str:
    token = TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    await db.execute(Q.token_insert, name, _hash(token), scope)
    return token


async def authenticate(db: Database, token: str) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = await db.fetchrow(Q.token_lookup, _hash(token))
    return Principal(row["id"], row["name"], row["scope"]) if row else None


async def list_tokens(db: Database) -> list[dict[str, Any]]:
    """Every token, newest first, revoked ones too (without their secrets: only hashes are kept)."""
    return [dict(row) for row in await db.fetch(Q.token_list)]


async def revoke_token(db: Database, token_id: int) -> bool:
    """Revoke a token; False when there is no such live token."""
    return await db.fetchval(Q.token_revoke, token_id) is not None
