"""The naive baseline for the sign-up benchmark: a bare FastAPI app doing the sign-up inserts, nothing else.

POST /subscriptions parses the JSON body with a pydantic model and, in one asyncpg transaction, inserts the
subscriber (ON CONFLICT on lower(email)), a pending subscription to the default list and the confirmation
email's row in `deliveries`, then answers 202. No address validation, no rate limits, no middleware, no
logging, no metrics. It runs against a database migrated with the service's own schema (`newsletter migrate`).

Run it with uvicorn (as `bench/subscribe.py` does):

    DATABASE_URL=postgresql://... uvicorn --app-dir bench baseline_app:app --loop uvloop --http httptools
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

INSERT_SUBSCRIBER = """
INSERT INTO subscribers (email, name) VALUES ($1, $2)
ON CONFLICT ((lower(email))) DO UPDATE SET updated_at = subscribers.updated_at
RETURNING id
"""
INSERT_SUBSCRIPTION = """
INSERT INTO subscriptions (subscriber_id, list_id, status, source, signup_ip, signup_user_agent)
VALUES ($1, $2, 'pending', 'api', $3::inet, $4)
ON CONFLICT (subscriber_id, list_id) DO UPDATE SET updated_at = now()
"""
INSERT_DELIVERY = """
INSERT INTO deliveries (kind, subscriber_id, list_id, recipient) VALUES ('confirmation', $1, $2, $3)
"""


class Signup(BaseModel):
    email: str
    name: str = ""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        os.environ["DATABASE_URL"],
        min_size=2,
        max_size=int(os.environ.get("BENCH_POOL_MAX_SIZE", "20")),
    )
    try:
        app.state.pool = pool
        app.state.list_id = await pool.fetchval("SELECT id FROM lists WHERE slug = 'default'")
        yield
    finally:
        await pool.close()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.post("/subscriptions", status_code=202)
async def subscribe(signup: Signup, request: Request) -> JSONResponse:
    pool: asyncpg.Pool = request.app.state.pool
    list_id: int = request.app.state.list_id
    async with pool.acquire() as conn, conn.transaction():
        subscriber_id = await conn.fetchval(INSERT_SUBSCRIBER, signup.email, signup.name)
        await conn.execute(
            INSERT_SUBSCRIPTION,
            subscriber_id,
            list_id,
            request.client.host if request.client else None,
            request.headers.get("user-agent"),
        )
        await conn.execute(INSERT_DELIVERY, subscriber_id, list_id, signup.email)
    return JSONResponse({"status": "accepted"}, status_code=202)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
