"""The admin web interface under /admin: server-rendered pages behind a login, usable without JavaScript."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from newsletter.web.admin import audience, auth, integrations, issues, operations, segments, sequences
from newsletter.web.admin.core import CsrfRejected, LoginRequired, csrf_rejected, login_redirect

PREFIX = "/admin"
ROUTERS: tuple[APIRouter, ...] = (
    auth.router,
    audience.router,
    segments.router,
    issues.router,
    sequences.router,
    operations.router,
    integrations.router,
)


def install(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router, include_in_schema=False)

    @app.exception_handler(LoginRequired)
    async def login_required(_: Request, error: LoginRequired) -> Response:
        return login_redirect(error)

    @app.exception_handler(CsrfRejected)
    async def forged(request: Request, _: CsrfRejected) -> Response:
        return csrf_rejected(request)
