"""The admin API at its edges: cursors it never returned, oversized attributes on any path, and the
Idempotency-Key header as the IETF draft defines it."""

from __future__ import annotations

import pytest

from tests.harness import AdminClient, TestApp, add_confirmed, admin_client

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def admin(app: TestApp) -> AdminClient:
    return await admin_client(app)


@pytest.mark.parametrize("path", ["/subscribers", "/issues", "/suppressions", "/issues/1/deliveries"])
@pytest.mark.parametrize("cursor", ["\u00b2", "\u0663", "-1", " 1", "1e3", "9" * 19, ""])
async def test_a_cursor_this_api_never_returned_is_422(admin: AdminClient, path: str, cursor: str) -> None:
    await admin.post("/issues", {"subject": "One", "markdown": "x"})

    response = await admin.get(path, cursor=cursor)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_attributes_over_16_kb_are_refused_on_change_as_on_creation(
    app: TestApp, admin: AdminClient
) -> None:
    [reader] = await add_confirmed(app.pool, 1)
    subscriber_id = await app.pool.fetchval("SELECT id FROM subscribers")
    large = {"notes": "x" * 17_000}

    created = await admin.post("/subscribers", {"email": "new@example.com", "attributes": large})
    changed = await admin.patch(f"/subscribers/{subscriber_id}", {"attributes": large})

    assert created.status_code == changed.status_code == 422
    assert await app.pool.fetchval("SELECT attributes FROM subscribers WHERE email = $1", reader) == {}


async def test_an_idempotency_key_may_hold_spaces(admin: AdminClient) -> None:
    first = await admin.post("/lists", {"slug": "weekly", "name": "Weekly"}, key="create weekly list")
    again = await admin.post("/lists", {"slug": "weekly", "name": "Weekly"}, key="create weekly list")
    control = await admin.post("/lists", {"slug": "other", "name": "Other"}, key="tab\there")

    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert control.status_code == 400
