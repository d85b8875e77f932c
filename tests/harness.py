"""The test harness: a real database per test, a real SMTP server, and the real app on a random port."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import uvicorn
from aiosmtpd.controller import Controller

from newsletter.app import build_app
from newsletter.config import Settings
from newsletter.db.database import Database, create_pool
from newsletter.domain.subscriber import ListSlug, SubscriberEmail
from newsletter.domain.vocabulary import (
    OptIn,
    SubscriberStatus,
    SubscriptionStatus,
    SuppressionReason,
    Visibility,
)
from newsletter.inbound.providers.sns import Fetcher
from newsletter.services.audience import lists, subscribers
from newsletter.services.automations import sequences
from newsletter.services.automations.sequences import StepContent
from newsletter.services.compliance import suppressions
from newsletter.services.sending import issues
from newsletter.services.sending.compose import Composer
from newsletter.transports import transport_from_settings
from newsletter.worker.delivery import DeliveryWorker
from newsletter.worker.webhooks import WebhookDispatcher


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


@dataclass
class ReceivedEmail:
    mail_from: str
    recipients: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def body(self, subtype: str) -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        assert part is not None, f"no text/{subtype} part"
        content = part.get_content()
        assert isinstance(content, str)
        return content

    def links(self, subtype: str) -> list[str]:
        pattern = r'href="([^"]+)"' if subtype == "html" else r"(https?://\S+)"
        return list(dict.fromkeys(re.findall(pattern, self.body(subtype))))


@dataclass
class SMTPHandler:
    """Records what it accepts; replies can be scripted per recipient or for the next RCPT commands."""

    received: list[ReceivedEmail] = field(default_factory=list)
    next_rcpt_replies: deque[str] = field(default_factory=deque)
    rejected: dict[str, str] = field(default_factory=dict)
    # The reply to the end of the content, by recipient (a content filter refusing one email, say).
    refused_content: dict[str, str] = field(default_factory=dict)
    # Real servers (Postfix, Exim) offer PIPELINING; aiosmtpd handles pipelined commands but does not say so.
    pipelining: bool = True
    sessions: int = 0
    # Run once, on the server's thread, at the next RCPT: something that happens while an email is in flight.
    on_next_rcpt: Callable[[], None] | None = None

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sessions += 1
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.on_next_rcpt is not None:
            hook, self.on_next_rcpt = self.on_next_rcpt, None
            hook()
        if address in self.rejected:
            return self.rejected[address]
        if self.next_rcpt_replies:
            return self.next_rcpt_replies.popleft()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for address in envelope.rcpt_tos:
            if address in self.refused_content:
                return self.refused_content[address]
        self.received.append(
            ReceivedEmail(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 2.0.0 Ok: queued"


class SMTPServer:
    """A real SMTP server (aiosmtpd) on a port of its own; it can be stopped and started again."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.handler = SMTPHandler()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def received(self) -> list[ReceivedEmail]:
        return self.handler.received

    def start(self) -> None:
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def to(self, address: str) -> list[ReceivedEmail]:
        return [item for item in self.received if address in item.recipients]


class TestApp:
    __test__ = False  # a helper, not a test class

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, smtp: SMTPServer, client: httpx.AsyncClient
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.db = Database(pool)
        self.smtp = smtp
        self.client = client
        self.worker = DeliveryWorker(self.db, transport_from_settings(settings), settings)
        self.webhooks = WebhookDispatcher(self.db, settings)

    async def subscribe(self, email: str, name: str = "", **extra: Any) -> httpx.Response:
        return await self.client.post("/subscriptions", json={"email": email, "name": name, **extra})

    async def subscribe_form(self, email: str, name: str = "", **extra: Any) -> httpx.Response:
        return await self.client.post("/subscriptions", data={"email": email, "name": name, **extra})

    async def dispatch_all_pending(self) -> int:
        return await self.worker.drain()

    def confirmation_links(self, address: str) -> list[str]:
        links = []
        for received in self.smtp.to(address):
            if "/subscriptions/confirm?" not in received.body("plain"):
                continue  # a newsletter, not a confirmation
            text_links = received.links("plain")
            assert text_links == received.links("html"), "the text and HTML parts link to different places"
            links.extend(text_links)
        return links

    def token_of(self, link: str) -> str:
        query = urlsplit(link).query
        assert query.startswith("token=")
        return query.removeprefix("token=")

    async def confirm(self, link: str) -> httpx.Response:
        return await self.client.post("/subscriptions/confirm", data={"token": self.token_of(link)})

    async def subscription_status(self, address: str, list_slug: str = "default") -> str | None:
        status: str | None = await self.pool.fetchval(
            """
            SELECT subscriptions.status FROM subscriptions
            JOIN subscribers ON subscribers.id = subscriptions.subscriber_id
            JOIN lists ON lists.id = subscriptions.list_id
            WHERE lower(subscribers.email) = lower($1) AND lists.slug = $2
            """,
            address,
            list_slug,
        )
        return status

    async def deliveries(self, address: str) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT * FROM deliveries WHERE lower(recipient) = lower($1) ORDER BY id", address
        )
        return rows

    # The state a story starts from, set up through the services where they say it (lists, suppressions,
    # issues), and directly where no service would put a person in that state in one step.

    async def add_list(
        self,
        slug: str,
        name: str | None = None,
        *,
        optin: OptIn = OptIn.DOUBLE,
        visibility: Visibility = Visibility.PUBLIC,
    ) -> int:
        created = await lists.create_list(
            self.db, ListSlug.parse(slug), name or slug.title(), "", optin, visibility
        )
        list_id: int = created["id"]
        return list_id

    async def add_subscriber(
        self,
        email: str,
        *,
        name: str = "",
        lists: Sequence[str] = ("default",),
        status: SubscriptionStatus = SubscriptionStatus.CONFIRMED,
        person: SubscriberStatus = SubscriberStatus.ACTIVE,
    ) -> int:
        """A person in these lists with this subscription status (a time for each step it implies)."""
        subscriber_id: int = await self.pool.fetchval(
            """
            WITH person AS (
                INSERT INTO subscribers (email, name, status) VALUES ($1, $2, $5) RETURNING id
            ), subscribed AS (
                INSERT INTO subscriptions
                    (subscriber_id, list_id, status, confirmed_at, unsubscribed_at, source)
                SELECT person.id, lists.id, $4,
                       CASE WHEN $4 <> 'pending' THEN now() END, CASE WHEN $4 = 'unsubscribed' THEN now() END,
                       'test'
                FROM person, lists WHERE lists.slug = ANY($3::text[])
            )
            SELECT id FROM person
            """,
            email,
            name,
            list(lists),
            status,
            person,
        )
        return subscriber_id

    async def suppress(
        self, email: str, reason: SuppressionReason = SuppressionReason.MANUAL, detail: str = ""
    ) -> None:
        await suppressions.suppress(self.db, SubscriberEmail.parse(email), reason, detail)

    async def leave(self, email: str, list_slug: str = "default") -> None:
        """The person unsubscribes from the list (as their link would)."""
        await self.pool.execute(
            """
            UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = now()
            FROM subscribers, lists
            WHERE subscribers.id = subscriptions.subscriber_id AND lower(subscribers.email) = lower($1)
              AND lists.id = subscriptions.list_id AND lists.slug = $2
            """,
            email,
            list_slug,
        )

    async def block(self, email: str) -> None:
        subscriber_id = await self.pool.fetchval(
            "SELECT id FROM subscribers WHERE lower(email) = lower($1)", email
        )
        await subscribers.update_subscriber(self.db, subscriber_id, status=SubscriberStatus.BLOCKLISTED)

    async def add_sequence(self, steps: Sequence[tuple[float, str]], list_slug: str = "default") -> int:
        """A sequence of steps (delay in seconds, subject), each with a body naming its subject."""
        created = await sequences.create_sequence(self.db, list_slug, "Welcome")
        composer = Composer(self.settings)
        for delay, subject in steps:
            step = StepContent.parse(
                composer, delay_seconds=int(delay), subject=subject, markdown=f"This is {subject}."
            )
            await sequences.add_step(self.db, created["id"], step)
        sequence_id: int = created["id"]
        return sequence_id

    async def pass_time(self, seconds: float) -> None:
        """The database's clock moves on (what delays are reckoned in)."""
        await self.pool.execute("UPDATE clock SET shift = shift + make_interval(secs => $1)", seconds)

    async def run_sequences(self) -> int:
        """The worker's sweep, then its lanes: the due steps queued and sent."""
        await self.worker.sweep_sequences()
        return await self.worker.drain()

    async def metric(self, name: str, **labels: str) -> float:
        """A sample of `/metrics` (0 when the series is not there)."""
        from prometheus_client.parser import text_string_to_metric_families

        text = (await self.client.get("/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    async def tables_holding(self, *needles: str) -> list[str]:
        """The tables with a row holding any of `needles` in any column ("table: needle")."""
        tables = await self.pool.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        found = []
        for table in tables:
            name = table["table_name"]
            for needle in needles:
                hits = await self.pool.fetchval(
                    f'SELECT count(*) FROM "{name}" AS t WHERE t::text ILIKE $1', f"%{needle}%"
                )
                if hits:
                    found.append(f"{name}: {needle}")
        return found

    async def events_settled(self, timeout: float = 60) -> None:
        """Wait until every event is behind the horizon the event cursor reads up to: the transactions of the
        server that began before the last event's (on a shared server, another database's too) have ended."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not await self.pool.fetchval(
            "SELECT coalesce(max(txid) < pg_snapshot_xmin(pg_current_snapshot()), true) FROM events"
        ):
            assert asyncio.get_running_loop().time() < deadline, "a transaction of the server stayed open"
            await asyncio.sleep(0.05)

    async def send_issue(
        self, subject: str = "News", markdown: str = "Hello", lists: Sequence[str] = ("default",)
    ) -> int:
        """An issue created and sent now, as the API does."""
        content = issues.IssueContent.parse(subject, markdown, None, None)
        created = await issues.create_issue(self.db, content, lists)
        await issues.send_issue(self.db, created["id"], None, None)
        issue_id: int = created["id"]
        return issue_id


@asynccontextmanager
async def spawn_app(
    database_url: str, smtp: SMTPServer, *, fetcher: Fetcher | None = None, **overrides: Any
) -> AsyncIterator[TestApp]:
    """The real application on 127.0.0.1 and a port picked by the OS, as the composition root builds it;
    `fetcher` stands in for the network where Amazon SNS certificates are fetched."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    values: dict[str, Any] = {
        "database_url": database_url,
        "email_url": smtp.url,
        "base_url": f"http://127.0.0.1:{port}",
        "retry_base_seconds": 0.01,
        "retry_max_seconds": 0.05,
        "smtp_timeout_seconds": 5,
        "pool_min_size": 1,
        "pool_max_size": 5,
        "log_format": "json",
    }
    values.update(overrides)
    settings = Settings(**values)
    pool = await create_pool(database_url, settings)
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(settings, pool, fetcher=fetcher), log_config=None, access_log=False, lifespan="off"
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        # The server where it listens, whatever base URL its links are made with.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            app = TestApp(settings, pool, smtp, client)
            yield app
            await app.worker.transport.close()
            await app.webhooks.close()
    finally:
        server.should_exit = True
        await serving
        await pool.close()
        sock.close()


class AdminClient:
    """The admin API as an integrator uses it: a Bearer token and JSON."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(f"/api/v1{path}", params=params, headers=self.headers)

    async def post(self, path: str, body: Any = None, key: str | None = None) -> httpx.Response:
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        return await self.client.post(f"/api/v1{path}", json=body, headers=headers)

    async def patch(self, path: str, body: Any) -> httpx.Response:
        return await self.client.patch(f"/api/v1{path}", json=body, headers=self.headers)

    async def delete(self, path: str) -> httpx.Response:
        return await self.client.delete(f"/api/v1{path}", headers=self.headers)


async def admin_client(app: TestApp, scope: str = "admin") -> AdminClient:
    from newsletter.domain.vocabulary import TokenScope
    from newsletter.services.access.tokens import create_token

    return AdminClient(app.client, await create_token(app.db, "tests", TokenScope(scope)))


async def add_confirmed(
    pool: asyncpg.Pool, count: int, *, list_slug: str = "default", prefix: str = "reader"
) -> list[str]:
    """`count` confirmed subscribers in one statement: reader0@example.com, reader1@example.com..."""
    await pool.execute(
        """
        WITH people AS (
            INSERT INTO subscribers (email, name)
            SELECT $2 || n || '@example.com', 'Reader ' || n FROM generate_series(0, $1 - 1) AS n
            RETURNING id
        )
        INSERT INTO subscriptions (subscriber_id, list_id, status, confirmed_at, source)
        SELECT people.id, lists.id, 'confirmed', now(), 'test' FROM people, lists WHERE lists.slug = $3
        """,
        count,
        prefix,
        list_slug,
    )
    return [f"{prefix}{n}@example.com" for n in range(count)]
