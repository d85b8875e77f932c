"""Bounce reports read from a mailbox by `newsletter bounces`, as operators run it, and the rules behind."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import pytest

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.verp import verp_address
from newsletter.services.compliance.reports import BounceRules, DeliveryEvent, apply_events
from tests.bounce_reports import delivery_status_notification
from tests.harness import TestApp, add_confirmed, admin_client

pytestmark = pytest.mark.asyncio

SECRET_KEY = "the key the operator configured"


def maildir(root: Path, messages: dict[str, bytes]) -> Path:
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True)
    for name, raw in messages.items():
        (root / "new" / name).write_bytes(raw)
    return root


async def run_bounces(database_url: str, data_dir: Path, *args: str) -> tuple[int, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("NEWSLETTER_")}
    env.update(
        DATABASE_URL=database_url,
        NEWSLETTER_SECRET_KEY=SECRET_KEY,
        NEWSLETTER_DATA_DIR=str(data_dir),
        NEWSLETTER_LOG_FORMAT="json",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "newsletter", "bounces", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def _sent_issue(app: TestApp, addresses: list[str]) -> dict[str, int]:
    admin = await admin_client(app)
    issue = (await admin.post("/issues", {"subject": "Issue #1", "markdown": "Hello"})).json()
    await admin.post(f"/issues/{issue['id']}/send")
    await app.dispatch_all_pending()
    return {address: (await app.deliveries(address))[0]["id"] for address in addresses}


async def test_bounce_reports_in_a_maildir_are_applied_once_and_moved_to_cur(
    app: TestApp, database_url: str, tmp_path: Path
) -> None:
    hard, soft, reader = await add_confirmed(app.pool, 3)
    deliveries = await _sent_issue(app, [hard, soft, reader])
    key = SECRET_KEY.encode()
    mailbox = maildir(
        tmp_path / "Maildir",
        {
            "1764324000.1.mx": delivery_status_notification(
                hard, to=verp_address(deliveries[hard], "localhost", secret_key=key)
            ),
            "1764324000.2.mx": delivery_status_notification(
                soft,
                action="delayed",
                status="4.4.1",
                diagnostic="X-Postfix; connect to mail.example.com[192.0.2.1]:25: Connection timed out",
                to=verp_address(deliveries[soft], "localhost", secret_key=key),
                message_id="<20261128100500.5F2D3B1@mx.example.net>",
            ),
            "1764324000.3.mx": b"From: reader@example.com\r\nSubject: Out of office\r\n\r\nAway.\r\n",
        },
    )

    status, output = await run_bounces(database_url, tmp_path, "--maildir", str(mailbox))

    assert status == 0, output
    assert "3 messages read: 2 bounces and complaints, 2 new, 1 addresses suppressed" in output
    suppressions = await app.pool.fetch("SELECT email, reason FROM suppressions")
    assert [(row["email"], row["reason"]) for row in suppressions] == [(hard, "hard_bounce")]
    assert [row["status"] for row in await app.deliveries(hard)] == ["bounced"]
    assert await app.subscription_status(hard) == "unsubscribed"
    assert [row["status"] for row in await app.deliveries(soft)] == ["sent"]
    assert await app.subscription_status(soft) == "confirmed"
    events = await app.pool.fetch("SELECT kind, email, delivery_id FROM delivery_events ORDER BY email")
    assert [tuple(row) for row in events] == [
        ("hard_bounce", hard, deliveries[hard]),
        ("soft_bounce", soft, deliveries[soft]),
    ]
    assert os.listdir(mailbox / "new") == []
    assert sorted(os.listdir(mailbox / "cur")) == [
        "1764324000.1.mx:2,S",
        "1764324000.2.mx:2,S",
        "1764324000.3.mx:2,S",
    ]

    status, output = await run_bounces(database_url, tmp_path, "--maildir", str(mailbox))

    assert status == 0, output
    assert "0 messages read" in output


async def test_a_report_read_twice_counts_once(app: TestApp, database_url: str, tmp_path: Path) -> None:
    [reader] = await add_confirmed(app.pool, 1)
    report = delivery_status_notification(reader, action="failed", status="4.2.2")
    # The same report delivered twice into the mailbox, and soft bounces about two other messages.
    mailbox = maildir(
        tmp_path / "Maildir",
        {
            "a.mx": report,
            "b.mx": report,
            "c.mx": delivery_status_notification(
                reader, action="failed", status="4.2.2", message_id="<c@mx>"
            ),
        },
    )

    status, output = await run_bounces(database_url, tmp_path, "--maildir", str(mailbox))

    assert status == 0, output
    assert await app.pool.fetchval("SELECT count(*) FROM delivery_events") == 2
    assert await app.pool.fetchval("SELECT count(*) FROM suppressions") == 0


class Pop3Server:
    """A POP3 mailbox on a local port (RFC 1939, the commands poplib sends); deletions count at QUIT."""

    def __init__(self, messages: list[bytes], password: str) -> None:
        self.messages: list[bytes | None] = list(messages)
        self.password = password

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        deleted: set[int] = set()
        writer.write(b"+OK POP3 ready\r\n")
        while line := await reader.readline():
            command, _, argument = line.decode().strip().partition(" ")
            command = command.upper()
            if command == "USER":
                writer.write(b"+OK\r\n")
            elif command == "PASS":
                writer.write(b"+OK\r\n" if argument == self.password else b"-ERR wrong password\r\n")
            elif command == "STAT":
                writer.write(f"+OK {len(self.messages)} 0\r\n".encode())
            elif command == "RETR":
                body = self.messages[int(argument) - 1] or b""
                stuffed = b"".join(
                    b"." + line if line.startswith(b".") else line for line in body.splitlines(keepends=True)
                )
                writer.write(b"+OK\r\n" + stuffed + b".\r\n")
            elif command == "DELE":
                deleted.add(int(argument) - 1)
                writer.write(b"+OK\r\n")
            elif command == "QUIT":
                for number in deleted:
                    self.messages[number] = None
                writer.write(b"+OK bye\r\n")
                await writer.drain()
                break
            await writer.drain()
        writer.close()


async def test_bounce_reports_in_a_pop3_mailbox_are_applied_and_deleted(
    app: TestApp, database_url: str, tmp_path: Path
) -> None:
    [reader] = await add_confirmed(app.pool, 1)
    mailbox = Pop3Server([delivery_status_notification(reader)], password="p@ss word")
    server = await asyncio.start_server(mailbox.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        url = f"pop3://bounces:p%40ss%20word@127.0.0.1:{port}?tls=none"
        status, output = await run_bounces(database_url, tmp_path, "--pop3", url)
        refused, refusal = await run_bounces(
            database_url, tmp_path, "--pop3", f"pop3://bounces:wrong@127.0.0.1:{port}?tls=none"
        )
    finally:
        server.close()
        await server.wait_closed()

    assert status == 0, output
    assert "1 messages read: 1 bounces and complaints, 1 new, 1 addresses suppressed" in output
    assert mailbox.messages == [None]
    assert await app.subscription_status(reader) == "unsubscribed"
    assert refused == 1
    assert "cannot read the mailbox: POP3 127.0.0.1: -ERR wrong password" in refusal
    assert "wrong@" not in refusal


async def test_the_command_needs_exactly_one_mailbox(database_url: str, tmp_path: Path) -> None:
    status, output = await run_bounces(database_url, tmp_path)
    assert status == 2
    assert "give one of --maildir, --imap or --pop3" in output

    status, output = await run_bounces(database_url, tmp_path, "--maildir", str(tmp_path))
    assert status == 1
    assert "is not a maildir" in output


async def test_reports_about_one_delivery_count_as_one_soft_bounce(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:

        def soft(event_id: str, delivery_id: int | None) -> DeliveryEvent:
            event = DeliveryEvent.parse(
                "dsn", event_id, "soft_bounce", "reader@example.com", None, "4.4.1", delivery_id
            )
            assert event is not None
            return event

        rules = BounceRules(soft_bounce_limit=3, window_days=30)
        # "Delayed" three times about one message is one soft bounce, not three.
        await apply_events(
            Database(pool), [soft("delayed-1", 5), soft("delayed-2", 5), soft("delayed-3", 5)], rules
        )
        await apply_events(Database(pool), [soft("other-1", 6)], rules)
        assert await pool.fetchval("SELECT count(*) FROM suppressions") == 0

        applied = await apply_events(Database(pool), [soft("other-2", None)], rules)

        assert applied.suppressed == 1
        assert await pool.fetchval("SELECT reason FROM suppressions") == "hard_bounce"
    finally:
        await pool.close()


async def test_soft_bounces_arriving_together_in_separate_batches_are_all_counted(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=4, max_size=4)
    try:
        events = [
            DeliveryEvent.parse("dsn", f"report-{n}", "soft_bounce", "reader@example.com", None)
            for n in range(3)
        ]
        # Hold the address, so that all three batches have recorded their event before any applies one.
        async with pool.acquire() as holder, holder.transaction():
            await holder.execute(Q.reports_lock_addresses, ["reader@example.com"])
            batches = [
                asyncio.create_task(apply_events(Database(pool), [event], BounceRules()))
                for event in events
                if event
            ]
            async with asyncio.timeout(10):
                while await holder.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted") < 3:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*batches)

        assert await pool.fetchval("SELECT count(*) FROM suppressions") == 1
    finally:
        await pool.close()
