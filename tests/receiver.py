"""A webhook receiver for the tests: a real HTTP server (aiohttp) on a loopback port, as an integrator's
endpoint would be. It verifies each request's signature with a Standard Webhooks library, keeps what it
received, and answers as the test scripts it: 2xx, 500, 410, 429 with Retry-After, a redirect, or no answer
before the sender's timeout."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Answer:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    # Seconds to wait before answering (past the sender's timeout: it gives up first).
    delay: float = 0.0
    body: str = ""


OK = Answer()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class Receiver:
    __test__ = False

    def __init__(self) -> None:
        self.secret: str | None = None
        self.received: list[Received] = []
        # Answers for the next requests, in order; then `default`.
        self.script: deque[Answer] = deque()
        self.default = OK
        self.in_flight = 0
        self.most_in_flight = 0
        self.port = 0
        self.arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def events(self) -> list[dict[str, Any]]:
        """What arrived and answered 2xx... or not: every request that reached the handler, in order."""
        return [item.event for item in self.received]

    def types(self) -> list[str]:
        return [event["type"] for event in self.events()]

    async def wait_for(self, count: int, timeout: float = 10) -> None:
        async def enough() -> None:
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {key.lower(): value for key, value in request.headers.items()}
        verified = False
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        self.received.append(Received(headers, body, verified))
        self.arrived.set()
        answer = self.script.popleft() if self.script else self.default
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if answer.delay:
                await asyncio.sleep(answer.delay)
        finally:
            self.in_flight -= 1
        return web.Response(status=answer.status, headers=answer.headers, text=answer.body)

    async def elsewhere(self, request: web.Request) -> web.StreamResponse:
        """Where a redirect points: reaching it means the redirect was followed."""
        self.received.append(Received(dict(request.headers), b'{"type": "followed a redirect"}', False))
        return web.Response(status=204)


@asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", receiver.handle)
    app.router.add_post("/elsewhere", receiver.elsewhere)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    receiver.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield receiver
    finally:
        await runner.cleanup()
