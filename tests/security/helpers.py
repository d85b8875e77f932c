"""Helpers shared by the security tests: a newsletter's unsubscribe link, and the whole database as text."""

from __future__ import annotations

from tests.harness import AdminClient, TestApp


async def unsubscribe_url(app: TestApp, admin: AdminClient, address: str) -> str:
    """Send one issue and return the unsubscribe URL of the copy `address` received."""
    created = await admin.post("/issues", {"subject": "News", "markdown": "Hello"})
    assert created.status_code == 201, created.text
    assert (await admin.post(f"/issues/{created.json()['id']}/send")).status_code == 202
    await app.dispatch_all_pending()
    header = str(app.smtp.to(address)[-1].message["List-Unsubscribe"])
    assert header.startswith("<") and header.endswith(">")
    return header[1:-1]


async def database_as_text(app: TestApp) -> str:
    """Every row of every table of the application's schema, as PostgreSQL prints it."""
    tables = await app.pool.fetch(
        "SELECT quote_ident(table_name) AS name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    dumps = []
    for table in tables:
        dump = await app.pool.fetchval(f"SELECT string_agg(t::text, E'\\n') FROM {table['name']} AS t")
        dumps.append(dump or "")
    return "\n".join(dumps)
