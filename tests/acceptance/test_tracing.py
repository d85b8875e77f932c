"""OpenTelemetry: one trace from the HTTP request, through the outbox, into the worker's send."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from newsletter.db.database import Database
from newsletter.services.access.tokens import create_token
from tests.acceptance.test_cli import base_env, newsletter, wait_for, wait_until_up
from tests.harness import SMTPServer, add_confirmed, free_port

pytestmark = pytest.mark.asyncio


class OtlpReceiver:
    """A local OTLP/HTTP trace receiver: what a collector would get, decoded."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.service_names: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    for attribute in resource_spans.resource.attributes:
                        if attribute.key == "service.name":
                            receiver.service_names.add(attribute.value.string_value)
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            receiver.spans.append(
                                {
                                    "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent_id": span.parent_span_id.hex(),
                                    "attributes": {a.key: a.value for a in span.attributes},
                                }
                            )
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def ancestors(self, span: dict[str, Any]) -> list[dict[str, Any]]:
        by_id = {s["span_id"]: s for s in self.spans}
        chain = []
        while span["parent_id"] in by_id:
            span = by_id[span["parent_id"]]
            chain.append(span)
        return chain


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


async def test_a_signup_trace_runs_from_the_request_into_the_send(
    tmp_path: Path, database_url: str, smtp: SMTPServer, otlp: OtlpReceiver
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env(
        DATABASE_URL=database_url,
        NEWSLETTER_PORT=str(port),
        NEWSLETTER_BASE_URL=url,
        NEWSLETTER_EMAIL_URL=f"smtp://127.0.0.1:{smtp.port}",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url,
        OTEL_SERVICE_NAME="newsletter-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await add_confirmed(pool, 3)
        token = await create_token(Database(pool), "tracing")
    finally:
        await pool.close()
    auth = {"Authorization": f"Bearer {token}"}

    with newsletter("run", env=env, cwd=tmp_path) as process:
        await wait_until_up(url, process)
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post("/subscriptions", json={"email": "ada@example.com"})
            assert response.status_code == 202

            async def delivered(kind: str) -> list[dict[str, Any]]:
                return [
                    span
                    for span in otlp.spans
                    if span["name"] == "deliver"
                    and span["attributes"]["newsletter.delivery.kind"].string_value == kind
                ]

            [deliver] = await wait_for(lambda: delivered("confirmation"))
            issue = await client.post(
                "/api/v1/issues", json={"subject": "Traced", "markdown": "Hello"}, headers=auth
            )
            sent = await client.post(f"/api/v1/issues/{issue.json()['id']}/send", headers=auth)
            assert sent.status_code == 202
            batches = await wait_for(lambda: delivered("newsletter"))

    assert len(smtp.to("ada@example.com")) == 1
    assert otlp.service_names == {"newsletter-test"}
    chain = otlp.ancestors(deliver)
    assert chain, "the send is not attached to the request that queued it"
    root = chain[-1]
    assert root["name"] == "POST /subscriptions"
    assert {span["trace_id"] for span in [deliver, *chain]} == {root["trace_id"]}
    assert deliver["attributes"]["newsletter.delivery.kind"].string_value == "confirmation"
    assert deliver["attributes"]["newsletter.deliveries"].int_value == 1
    # A newsletter's batches continue the trace of the request that sent the issue.
    assert sum(span["attributes"]["newsletter.deliveries"].int_value for span in batches) == 3
    for batch in batches:
        assert otlp.ancestors(batch)[-1]["name"] == "POST /api/v1/issues/{issue_id}/send"
