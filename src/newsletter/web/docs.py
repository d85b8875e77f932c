"""The API's documentation page, `/docs`: Swagger UI served from the installed swagger-ui-bundle package, so
that it works where the server has no internet and loads nothing from elsewhere, under a strict policy."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from newsletter.templating import environment

ASSETS_PATH = "/docs/assets"
# Swagger UI is a script of ours (no inline script); React sets styles through the DOM, which a policy allows,
# but the bundle also writes a few style elements.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
async def docs() -> HTMLResponse:
    html = environment().get_template("pages/docs.html").render(assets=ASSETS_PATH)
    return HTMLResponse(html, headers={"Content-Security-Policy": DOCS_POLICY, "X-Frame-Options": "DENY"})


def install(app: FastAPI) -> None:
    app.mount(ASSETS_PATH, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    app.include_router(router)
