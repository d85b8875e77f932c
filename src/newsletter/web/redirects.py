"""Trailing-slash redirects built from NEWSLETTER_BASE_URL.

Starlette's own (`redirect_slashes`) builds the Location from the request's Host header, so `GET /admin/` with
`Host: evil.example` was sent to `http://evil.example/admin`. This one answers only where the other spelling
of the path has a route, and always points at the configured base URL.
"""

from __future__ import annotations

from starlette.responses import RedirectResponse
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send


def install_slash_redirects(router: Router, base_url: str) -> None:
    not_found: ASGIApp = router.default
    router.redirect_slashes = False

    async def redirect_or_not_found(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] == "http" and path != "/":
            other = {**scope, "path": path.rstrip("/") if path.endswith("/") else path + "/"}
            if any(route.matches(other)[0] is not Match.NONE for route in router.routes):
                query = scope.get("query_string", b"").decode("latin-1")
                location = base_url + other["path"] + (f"?{query}" if query else "")
                await RedirectResponse(location)(scope, receive, send)
                return
        await not_found(scope, receive, send)

    router.default = redirect_or_not_found
