"""The composition root: builds the web application and the worker from configuration."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import asyncpg
import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from newsletter import __version__
from newsletter.config import Settings
from newsletter.db.database import DATABASE_ERRORS, Database, create_pool, is_unavailable
from newsletter.db.embedded import start_embedded, stop_embedded
from newsletter.db.migrations import migrate
from newsletter.db.wake import Waker
from newsletter.inbound.providers.sns import Fetcher, HttpsFetcher, SnsVerifier
from newsletter.services.access.mail_domains import MailDomains
from newsletter.services.errors import Conflict, Invalid, NotFound
from newsletter.services.sending.compose import Composer
from newsletter.tracing import configure_tracing, shutdown_tracing
from newsletter.transports import transport_from_settings
from newsletter.web import admin, api, docs, preferences, public, webhooks
from newsletter.web.admin import operations
from newsletter.web.admin.core import not_found as admin_not_found
from newsletter.web.api import transfer
from newsletter.web.api.common import ApiError, service_error
from newsletter.web.cors import SignupCorsMiddleware
from newsletter.web.middleware import RequestContextMiddleware
from newsletter.web.problems import problem
from newsletter.web.redirects import install_slash_redirects
from newsletter.web.state import Context
from newsletter.worker.delivery import DeliveryWorker
from newsletter.worker.webhooks import WebhookDispatcher

log = structlog.get_logger(__name__)


def build_app(settings: Settings, pool: asyncpg.Pool, *, fetcher: Fetcher | None = None) -> FastAPI:
    """The web application; `fetcher` fetches Amazon SNS certificates (over https unless given)."""
    app = FastAPI(
        title="Newsletter",
        version=__version__,
        description="Double opt-in sign-up and reliable newsletter delivery on PostgreSQL.",
        docs_url=None,  # served by web/docs.py, from the package, under a policy
        redoc_url=None,
    )
    app.state.context = Context(
        settings=settings,
        db=Database(pool),
        composer=Composer(settings),
        waker=Waker(pool),
        sns=SnsVerifier(fetcher or HttpsFetcher()),
        secret_key=settings.resolved_secret_key().encode(),
        mail_domains=MailDomains.from_settings(settings),
    )
    app.include_router(public.router)
    app.include_router(preferences.router)
    for router in api.ROUTERS:
        app.include_router(router)
    app.include_router(webhooks.router)
    admin.install(app)
    docs.install(app)
    install_slash_redirects(app.router, settings.base_url)
    static = resources.files("newsletter").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> Response:
        return error.response()

    async def from_service(request: Request, error: Exception) -> Response:
        """A service error a handler leaves: the API's problem+json, or the admin pages' own page for what
        does not exist."""
        assert isinstance(error, NotFound | Invalid | Conflict)
        if isinstance(error, NotFound) and request.url.path.startswith(admin.PREFIX):
            return admin_not_found(request, error)
        return service_error(error).response()

    for service_error_type in (NotFound, Invalid, Conflict):
        app.add_exception_handler(service_error_type, from_service)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> Response:
        errors = [
            {"field": ".".join(str(part) for part in item["loc"]), "message": item["msg"]}
            for item in error.errors()
        ]
        return problem(
            422, "Invalid request", "The request does not match the expected shape.", errors=errors
        )

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> Response:
        return problem(error.status_code, str(error.detail), headers=dict(error.headers or {}))

    async def database_error(_: Request, error: Exception) -> Response:
        """Lost connections and a database that is down or shutting down: 503. A value PostgreSQL refuses
        (out of range, a NUL byte): the client's, 422. Anything else is a fault of ours: 500, logged."""
        sqlstate = getattr(error, "sqlstate", None) or ""
        if isinstance(error, asyncpg.DataError) or sqlstate.startswith("22"):
            return problem(422, "Invalid request", "A value is out of range or holds characters not allowed.")
        if not is_unavailable(error):
            log.error("database error", exc_info=error)
            return problem(500, "Internal error", "Something went wrong on our side; it has been logged.")
        log.warning("database unavailable", error=str(error))
        return problem(
            503,
            "Service unavailable",
            "The database is not answering; try again shortly.",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> Response:
        log.error("unexpected error", exc_info=error)
        return problem(500, "Internal error", "Something went wrong on our side; it has been logged.")

    for error_type in (*DATABASE_ERRORS, asyncpg.DataError):
        app.add_exception_handler(error_type, database_error)

    app.add_middleware(
        SignupCorsMiddleware, allowed_origins=settings.allowed_origins, base_url=settings.base_url
    )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        large_bodies={
            transfer.IMPORT_PATH: settings.max_import_bytes,
            operations.IMPORT_PAGE_PATH: settings.max_import_bytes,
        },
    )
    return app


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[str]:
    """The URL of the configured database, or of an embedded one started for as long as this lasts."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    url, handle = await asyncio.to_thread(start_embedded, settings.data_dir)
    log.info("embedded PostgreSQL started", data_dir=str(settings.data_dir))
    try:
        yield url
    finally:
        await asyncio.to_thread(stop_embedded, handle)


async def apply_migrations(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        applied = await migrate(conn)
    if applied:
        log.info("database migrated", applied=applied)


class _Server(uvicorn.Server):
    """Uvicorn without its own signal handlers: ours stop the server and the worker together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


async def run_processes(settings: Settings, *, http: bool, worker: bool, migrate_first: bool) -> None:
    """`run`, `serve` and `worker`: the HTTP server, the delivery worker, or both, until SIGTERM or SIGINT."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    server: _Server | None = None

    def stop() -> None:
        log.info("shutting down")
        stopping.set()
        if server is not None:
            server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    if configure_tracing():
        log.info("tracing exported over OTLP")

    async with database(settings) as url:
        pool = await create_pool(url, settings)
        try:
            if migrate_first:
                await apply_migrations(pool)
            tasks = []
            if worker:
                delivery = DeliveryWorker(Database(pool), transport_from_settings(settings), settings)
                tasks.append(asyncio.create_task(delivery.run(stopping)))
                tasks.append(asyncio.create_task(WebhookDispatcher(Database(pool), settings).run(stopping)))
            if http:
                config = uvicorn.Config(
                    build_app(settings, pool),
                    host=settings.host,
                    port=settings.port,
                    log_config=None,
                    access_log=False,
                    server_header=False,
                    proxy_headers=True,
                )
                server = _Server(config)
                tasks.append(asyncio.create_task(server.serve()))
                log.info(
                    "listening", url=f"http://{settings.host}:{settings.port}", base_url=settings.base_url
                )
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            stop()
            await asyncio.gather(*tasks)
        finally:
            await pool.close()
            await asyncio.to_thread(shutdown_tracing)
