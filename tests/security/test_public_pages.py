"""The public pages: what a visitor typed, and what an operator named a list, is shown escaped, and every page
is sent with a policy that forbids scripts, framing and posting elsewhere."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from tests.harness import TestApp, add_confirmed, admin_client
from tests.security.helpers import unsubscribe_url

pytestmark = pytest.mark.asyncio

SCRIPT = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
POLICY = {"default-src 'none'", "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'"}


def _assert_safe(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("text/html"), (response.request.url, response.text)
    # Escaped, the payload is text: no tag opens, no quote closes the attribute it was put in.
    assert "<script>" not in response.text
    assert "<img src=x" not in response.text
    assert '"><' not in response.text
    directives = {part.strip() for part in response.headers["content-security-policy"].split(";")}
    assert directives >= POLICY
    assert not any(part.startswith("script-src") for part in directives)
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_what_a_visitor_types_comes_back_escaped(app: TestApp) -> None:
    pages = [
        await app.client.get("/", params={"list": SCRIPT}),
        await app.subscribe_form(SCRIPT, SCRIPT),
        await app.subscribe_form("ada@example.com", SCRIPT, list=SCRIPT),
        await app.client.get("/subscriptions/confirm", params={"token": SCRIPT}),
        await app.client.post("/subscriptions/confirm", data={"token": SCRIPT}),
        # A path segment cannot hold "/": the payload without its closing tag.
        await app.client.get(f"/unsubscribe/{quote(SCRIPT.replace('/', ''), safe='')}"),
    ]
    # The sign-up page of an unknown list is not found (issue 13: it names its list, or is not there).
    assert [page.status_code for page in pages] == [404, 422, 422, 404, 404, 404]
    for page in pages:
        _assert_safe(page)
    assert "&lt;script&gt;" in pages[1].text, [(p.status_code, p.headers["content-type"]) for p in pages]


async def test_a_list_named_with_a_script_is_shown_escaped_on_every_page(app: TestApp) -> None:
    admin = await admin_client(app)
    created = await admin.post("/lists", {"slug": "evil", "name": SCRIPT, "visibility": "public"})
    assert created.status_code == 201, created.text
    await app.pool.execute("UPDATE lists SET name = $1 WHERE slug = 'default'", SCRIPT)
    [reader] = await add_confirmed(app.pool, 1)
    assert (await app.subscribe("ada@example.com", list="evil")).status_code == 202
    await app.dispatch_all_pending()
    links = app.confirmation_links("ada@example.com")
    assert len(links) == 1, [dict(row) for row in await app.deliveries("ada@example.com")]
    [link] = links
    unsubscribe = await unsubscribe_url(app, admin, reader)

    pages = [
        await app.client.get(link),
        await app.confirm(link),
        await app.confirm(link),
        await app.client.get(unsubscribe),
        await app.client.post(unsubscribe, data={"scope": "all"}),
    ]
    assert [page.status_code for page in pages] == [200, 200, 200, 200, 200]
    for page in pages:
        _assert_safe(page)
        assert "&lt;script&gt;" in page.text


async def test_the_api_docs_load_nothing_from_elsewhere(app: TestApp) -> None:
    page = await app.client.get("/docs")
    policy = {part.strip() for part in page.headers["content-security-policy"].split(";")}

    assert page.status_code == 200
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "http" not in page.headers["content-security-policy"]
    assert "cdn" not in page.text and "https://" not in page.text
    assets = [
        link
        for link in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/static/docs.js")
    ]
    for asset in assets:
        assert asset in page.text
        assert (await app.client.get(asset)).status_code == 200, asset
    assert (await app.client.get("/redoc")).status_code == 404
