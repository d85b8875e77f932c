"""Admin API tokens: shown once, stored as SHA-256 hashes."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg

from newsletter.db.queries import query

TOKEN_PREFIX = "nl_"  # noqa: S105 - a visible prefix, not a secret


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    name: str
    scope: str


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_token(pool: asyncpg.Pool, name: str, scope: str = "admin") -> str:
    token = TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    await pool.execute(query("token_insert"), name, _hash(token), scope)
    return token


async def authenticate(pool: asyncpg.Pool, token: str) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = await pool.fetchrow(query("token_lookup"), _hash(token))
    return Principal(row["id"], row["name"], row["scope"]) if row else None


async def list_tokens(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every token, newest first, revoked ones too (without their secrets: only hashes are kept)."""
    return [dict(row) for row in await pool.fetch(query("token_list"))]


async def revoke_token(pool: asyncpg.Pool, token_id: int) -> bool:
    """Revoke a token; False when there is no such live token."""
    return await pool.fetchval(query("token_revoke"), token_id) is not None
