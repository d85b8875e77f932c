"""Subscribers' rights: export of everything held, erasure that leaves nothing, purge of stale sign-ups."""

from __future__ import annotations

import contextlib
import json

import pytest

from newsletter.domain.vocabulary import SuppressionReason
from tests.harness import AdminClient, TestApp, add_confirmed, admin_client

pytestmark = pytest.mark.asyncio

ADDRESS = "zelda.unique-person@example.org"
NAME = "Zelda Quixotic-Person"


@pytest.fixture
async def admin(app: TestApp) -> AdminClient:
    return await admin_client(app)


async def _person_with_history(app: TestApp, admin: AdminClient) -> tuple[int, int]:
    """Signed up and confirmed through the form, received an issue, was rate limited once: data everywhere."""
    await add_confirmed(app.pool, 3)
    await app.client.post(
        "/subscriptions", data={"email": ADDRESS, "name": NAME}, headers={"User-Agent": "ZeldaBrowser/1"}
    )
    await app.dispatch_all_pending()
    await app.confirm(app.confirmation_links(ADDRESS)[0])
    issue = (await admin.post("/issues", {"subject": "Issue", "markdown": "Hello"}, key="issue-1")).json()
    await admin.post(f"/issues/{issue['id']}/send")
    await app.dispatch_all_pending()
    await admin.post("/subscribers", {"email": ADDRESS, "name": NAME}, key="dup-1")  # 409, kept with its key
    subscriber_id: int = await app.pool.fetchval("SELECT id FROM subscribers WHERE email = $1", ADDRESS)
    return subscriber_id, issue["id"]


async def test_export_returns_everything_held(app: TestApp, admin: AdminClient) -> None:
    subscriber_id, issue_id = await _person_with_history(app, admin)

    export = (await admin.get(f"/subscribers/{subscriber_id}/export")).json()

    assert export["subscriber"]["email"] == ADDRESS and export["subscriber"]["name"] == NAME
    [subscription] = export["subscriptions"]
    assert subscription["status"] == "confirmed"
    assert subscription["signup_user_agent"] == "ZeldaBrowser/1"
    assert subscription["signup_ip"] == "127.0.0.1" and subscription["confirmed_at"]
    kinds = sorted((d["kind"], d["issue_id"]) for d in export["deliveries"])
    assert kinds == [("confirmation", None), ("newsletter", issue_id)]
    assert export["confirmation_links"][0]["used_at"]


async def test_erasing_leaves_no_trace_and_issue_counts_unchanged(app: TestApp, admin: AdminClient) -> None:
    subscriber_id, issue_id = await _person_with_history(app, admin)
    assert await app.tables_holding(ADDRESS, NAME), "the person's data is in the database before"
    counts_before = (await admin.get(f"/issues/{issue_id}")).json()["counts"]

    response = await admin.delete(f"/subscribers/{subscriber_id}")

    assert response.status_code == 204
    assert await app.tables_holding(ADDRESS, NAME, "zelda") == []
    assert (await admin.get(f"/issues/{issue_id}")).json()["counts"] == counts_before
    assert counts_before["sent"] == 4
    assert (await admin.get(f"/subscribers/{subscriber_id}")).status_code == 404
    assert (await admin.delete(f"/subscribers/{subscriber_id}")).status_code == 404


async def test_unconfirmed_signups_older_than_the_limit_are_purged(app: TestApp) -> None:
    await app.subscribe("stale@example.com", "Stale Person")
    await app.subscribe("fresh@example.com")
    await app.dispatch_all_pending()
    [confirmed] = await add_confirmed(app.pool, 1)
    await app.pool.execute(
        "UPDATE subscribers SET created_at = now() - interval '40 days' WHERE email <> 'fresh@example.com'"
    )

    await app.worker.housekeeping()

    remaining = {row["email"] for row in await app.pool.fetch("SELECT email FROM subscribers")}
    assert remaining == {"fresh@example.com", confirmed}
    assert await app.tables_holding("stale@example.com", "Stale Person") == []


async def test_erasing_also_forgets_bounces_and_complaints(app: TestApp, admin: AdminClient) -> None:
    subscriber_id, _ = await _person_with_history(app, admin)
    await app.pool.execute(
        """INSERT INTO delivery_events (provider, provider_event_id, kind, email, detail, occurred_at)
           VALUES ('postmark', 'evt-1', 'soft_bounce', $1, 'mailbox full', now())""",
        ADDRESS,
    )
    export = (await admin.get(f"/subscribers/{subscriber_id}/export")).json()
    assert [event["kind"] for event in export["bounces_and_complaints"]] == ["soft_bounce"]

    assert (await admin.delete(f"/subscribers/{subscriber_id}")).status_code == 204

    assert await app.tables_holding(ADDRESS, NAME) == []


async def _columns_holding(app: TestApp, *needles: str) -> list[str]:
    """Every text, json and bytea column of every table, read decoded (bytea as UTF-8, and as the JSON it may
    hold, whose escapes such as \\u00f6 are undone), searched for each needle whatever its case."""
    columns = await app.pool.fetch(
        """SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns AS c
           JOIN information_schema.tables AS t USING (table_schema, table_name)
           WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
             AND c.data_type IN ('text', 'character varying', 'json', 'jsonb', 'bytea', 'inet', 'ARRAY')"""
    )
    found = []
    for column in columns:
        table, name = column["table_name"], column["column_name"]
        values = await app.pool.fetch(f'SELECT "{name}" AS v FROM "{table}" WHERE "{name}" IS NOT NULL')
        for row in values:
            value = row["v"]
            readings = [str(value)]
            if isinstance(value, bytes):
                text = value.decode("utf-8", "replace")
                readings = [text]
                with contextlib.suppress(ValueError):
                    readings.append(json.dumps(json.loads(text), ensure_ascii=False))
            elif not isinstance(value, str):
                readings.append(json.dumps(value, ensure_ascii=False, default=str))
            for needle in needles:
                if any(needle.lower() in reading.lower() for reading in readings):
                    found.append(f"{table}.{name}: {needle}")
    return found


async def test_erasing_a_person_with_a_non_ascii_address_leaves_nothing_in_any_column(
    app: TestApp, admin: AdminClient
) -> None:
    address, name, secret = "Jösé.Erase@bücher.de", "Jösé Erase", "Hausnummer-Zwölf"
    created = await admin.post("/subscribers", {"email": address, "name": name}, key="create-jose")
    subscriber_id = created.json()["id"]
    await admin.client.patch(
        f"/api/v1/subscribers/{subscriber_id}",
        json={"attributes": {"street": secret}},
        headers={**admin.headers, "Idempotency-Key": "patch-jose"},
    )
    await admin.post("/suppressions", {"email": address, "detail": "asked by phone"}, key="suppress-jose")
    assert await _columns_holding(app, address, name, secret), "the person is in the database before"

    assert (await admin.delete(f"/subscribers/{subscriber_id}")).status_code == 204

    assert await _columns_holding(app, address, name, secret, "Jösé", "J\\u00f6s\\u00e9") == []


async def test_erasure_forgets_the_address_but_not_that_it_complained(
    app: TestApp, admin: AdminClient
) -> None:
    reader, other = await add_confirmed(app.pool, 2)
    await app.suppress(reader, SuppressionReason.COMPLAINT, "marked as spam")
    subscriber_id = await app.pool.fetchval("SELECT id FROM subscribers WHERE email = $1", reader)

    assert (await admin.delete(f"/subscribers/{subscriber_id}")).status_code == 204
    assert await _columns_holding(app, reader) == []

    # The address comes back through the API as if confirmed elsewhere, and through a sign-up: its
    # complaint comes back with it, and no issue reaches it.
    assert (await admin.post("/subscribers", {"email": reader, "status": "confirmed"})).status_code == 201
    suppression = await app.pool.fetchrow("SELECT reason FROM suppressions WHERE email = $1", reader)
    assert suppression is not None and suppression["reason"] == "complaint"
    issue = (await admin.post("/issues", {"subject": "News", "markdown": "Hello"})).json()
    await admin.post(f"/issues/{issue['id']}/send")
    await app.dispatch_all_pending()
    assert app.smtp.to(reader) == []
    assert len(app.smtp.to(other)) == 1


async def test_an_erased_address_that_bounced_is_refused_by_the_next_import(
    app: TestApp, admin: AdminClient
) -> None:
    import io

    from newsletter.services.audience.imports import import_csv

    [reader] = await add_confirmed(app.pool, 1)
    await app.suppress(reader, SuppressionReason.HARD_BOUNCE)
    subscriber_id = await app.pool.fetchval("SELECT id FROM subscribers WHERE email = $1", reader)
    await admin.delete(f"/subscribers/{subscriber_id}")

    report = await import_csv(app.db, io.BytesIO(f"email\n{reader.upper()}\n".encode()), list_slug="default")

    assert report.subscribed == 0
    assert await app.pool.fetchval("SELECT reason FROM suppressions") == "hard_bounce"
