"""The suppression list through the admin API: list it page by page, add to it, lift an address from it."""

from __future__ import annotations

import pytest

from newsletter.domain.vocabulary import SuppressionReason
from tests.harness import AdminClient, TestApp, add_confirmed, admin_client

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def admin(app: TestApp) -> AdminClient:
    return await admin_client(app)


async def test_suppressions_are_listed_page_by_page(app: TestApp, admin: AdminClient) -> None:
    for n in range(5):
        assert (await admin.post("/suppressions", {"email": f"gone{n}@example.com"})).status_code == 201
    await admin.post("/suppressions", {"email": "bounced@example.com", "reason": "hard_bounce"})

    first = (await admin.get("/suppressions", limit=4)).json()
    second = (await admin.get("/suppressions", limit=4, cursor=first["next_cursor"])).json()
    bounced = (await admin.get("/suppressions", reason="hard_bounce")).json()
    searched = (await admin.get("/suppressions", search="gone3")).json()

    emails = [item["email"] for item in first["items"] + second["items"]]
    assert emails == [f"gone{n}@example.com" for n in range(5)] + ["bounced@example.com"]
    assert second["next_cursor"] is None
    assert [item["email"] for item in bounced["items"]] == ["bounced@example.com"]
    assert [item["email"] for item in searched["items"]] == ["gone3@example.com"]
    assert first["items"][0]["reason"] == "manual"


async def test_adding_an_address_twice_answers_with_the_same_entry(app: TestApp, admin: AdminClient) -> None:
    first = await admin.post("/suppressions", {"email": "Someone@Example.com", "detail": "asked by phone"})
    again = await admin.post("/suppressions", {"email": "someone@example.com", "reason": "complaint"})
    replayed = await admin.post("/suppressions", {"email": "other@example.com"}, key="add-other")
    replayed_again = await admin.post("/suppressions", {"email": "other@example.com"}, key="add-other")

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert first.json()["reason"] == "manual"
    assert first.json()["detail"] == "asked by phone"
    assert replayed_again.headers["idempotent-replayed"] == "true"
    assert replayed_again.json() == replayed.json()
    assert await app.pool.fetchval("SELECT count(*) FROM suppressions") == 2


async def test_a_manual_suppression_outranks_an_unsubscribe_from_every_list(
    app: TestApp, admin: AdminClient
) -> None:
    await app.suppress("reader@example.com", SuppressionReason.UNSUBSCRIBE_ALL)

    response = await admin.post("/suppressions", {"email": "reader@example.com"})

    assert response.json()["reason"] == "manual"


async def test_a_suppressed_address_is_not_sent_the_next_issue_until_lifted(
    app: TestApp, admin: AdminClient
) -> None:
    [reader] = await add_confirmed(app.pool, 1)
    await admin.post("/suppressions", {"email": reader})

    issue = (await admin.post("/issues", {"subject": "News", "markdown": "Hello"})).json()
    await admin.post(f"/issues/{issue['id']}/send")
    await app.dispatch_all_pending()
    assert app.smtp.to(reader) == []

    assert (await admin.delete(f"/suppressions/{reader.upper()}")).status_code == 204
    assert (await admin.delete(f"/suppressions/{reader}")).status_code == 404
    assert (await admin.get("/suppressions")).json()["items"] == []

    issue = (await admin.post("/issues", {"subject": "More news", "markdown": "Hello"})).json()
    await admin.post(f"/issues/{issue['id']}/send")
    await app.dispatch_all_pending()
    assert len(app.smtp.to(reader)) == 1


async def test_invalid_additions_are_refused(admin: AdminClient) -> None:
    assert (await admin.post("/suppressions", {"email": "not an address"})).status_code == 422
    assert (
        await admin.post("/suppressions", {"email": "a@example.com", "reason": "other"})
    ).status_code == 422
    assert (
        await admin.post("/suppressions", {"email": "a@example.com", "detail": "a\x00b"})
    ).status_code == 422


async def test_a_read_token_may_list_but_not_change_suppressions(app: TestApp) -> None:
    reader = await admin_client(app, scope="read")

    assert (await reader.get("/suppressions")).status_code == 200
    assert (await reader.post("/suppressions", {"email": "a@example.com"})).status_code == 403
    assert (await reader.delete("/suppressions/a@example.com")).status_code == 403
    assert (await app.client.get("/api/v1/suppressions")).status_code == 401
