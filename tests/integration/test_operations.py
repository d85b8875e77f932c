"""Health, readiness, metrics, API description and a database that goes away."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.conftest import drop_database
from tests.harness import SMTPServer, TestApp, spawn_app, with_database

pytestmark = pytest.mark.asyncio


async def test_health_endpoints(app: TestApp) -> None:
    assert (await app.client.get("/health/live")).json() == {"status": "ok"}
    assert (await app.client.get("/health/ready")).status_code == 200


async def test_metrics_count_requests_and_deliveries(app: TestApp) -> None:
    await app.subscribe("ada@example.com")
    await app.dispatch_all_pending()

    text = (await app.client.get("/metrics")).text

    assert 'newsletter_http_requests_total{method="POST",route="/subscriptions",status="202"}' in text
    assert "newsletter_http_request_duration_seconds_bucket" in text
    assert 'newsletter_deliveries_total{kind="confirmation",status="sent"}' in text


async def test_the_openapi_description_lists_the_public_endpoints(app: TestApp) -> None:
    spec = (await app.client.get("/openapi.json")).json()

    assert {"/subscriptions", "/subscriptions/confirm", "/health/ready"} <= set(spec["paths"])
    assert (
        "application/x-www-form-urlencoded"
        in spec["paths"]["/subscriptions"]["post"]["requestBody"]["content"]
    )


async def test_pages_send_security_headers(app: TestApp) -> None:
    response = await app.client.get("/")

    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert 'name="website"' in response.text  # the honeypot


async def test_a_dead_database_gets_503_and_ready_says_so(
    postgres_url: str, database_url: str, smtp: SMTPServer
) -> None:
    async with spawn_app(database_url, smtp) as app:
        name = urlsplit(database_url).path.lstrip("/")
        await drop_database(postgres_url, name)  # terminates every connection, and the database is gone

        ready = await app.client.get("/health/ready")
        signup = await app.subscribe("ada@example.com")

        assert ready.status_code == 503
        assert signup.status_code == 503
        assert signup.headers["content-type"] == "application/problem+json"
        assert "retry-after" in signup.headers
    assert with_database(postgres_url, name) == database_url
