"""The outbox: emails survive SMTP outages, transient failures are retried, permanent ones never."""

from __future__ import annotations

import asyncio

import pytest

from tests.harness import SMTPServer, TestApp, spawn_app

pytestmark = pytest.mark.asyncio


async def _settle(app: TestApp, seconds: float = 0.2) -> None:
    """Wait past the (test-sized) retry delay, then send what is due."""
    await asyncio.sleep(seconds)
    await app.dispatch_all_pending()


async def test_signup_while_smtp_is_down_is_accepted_and_delivered_once_it_is_back(database_url: str) -> None:
    smtp = SMTPServer()  # not started: connections are refused
    async with spawn_app(database_url, smtp) as app:
        response = await app.subscribe("ada@example.com")
        assert response.status_code == 202
        await app.dispatch_all_pending()
        [row] = await app.deliveries("ada@example.com")
        assert row["status"] == "queued"
        assert "Connect" in row["last_error"]

        smtp.start()
        try:
            await _settle(app)
            assert len(smtp.to("ada@example.com")) == 1
            await _settle(app)
            assert len(smtp.to("ada@example.com")) == 1
            [row] = await app.deliveries("ada@example.com")
            assert row["status"] == "sent"
            assert row["attempts"] >= 2
        finally:
            smtp.stop()


async def test_451_then_250_delivers_exactly_once(app: TestApp) -> None:
    app.smtp.handler.next_rcpt_replies.append("451 4.7.1 Greylisted, try again later")
    await app.subscribe("grey@example.com")

    await app.dispatch_all_pending()
    await _settle(app)
    await _settle(app)

    assert len(app.smtp.to("grey@example.com")) == 1
    [row] = await app.deliveries("grey@example.com")
    assert (row["status"], row["attempts"]) == ("sent", 2)


async def test_550_is_recorded_as_failed_never_retried_and_suppressed(app: TestApp) -> None:
    app.smtp.handler.rejected["nobody@example.com"] = "550 5.1.1 No such user"
    await app.subscribe("nobody@example.com")
    await app.subscribe("somebody@example.com")

    await app.dispatch_all_pending()
    await _settle(app)

    [row] = await app.deliveries("nobody@example.com")
    assert row["status"] == "failed"
    assert row["attempts"] == 1
    assert row["last_error"].startswith("550")
    assert await app.pool.fetchval("SELECT reason FROM suppressions WHERE email = 'nobody@example.com'") == (
        "hard_bounce"
    )
    assert len(app.smtp.to("somebody@example.com")) == 1


async def test_transient_failures_give_up_after_the_attempt_limit(database_url: str) -> None:
    smtp = SMTPServer()
    smtp.start()
    try:
        async with spawn_app(database_url, smtp, max_attempts=3) as app:
            smtp.handler.next_rcpt_replies.extend(["421 4.3.0 busy"] * 10)
            await app.subscribe("busy@example.com")
            for _ in range(5):
                await _settle(app)
            [row] = await app.deliveries("busy@example.com")
            assert (row["status"], row["attempts"]) == ("failed", 3)
            assert smtp.received == []
    finally:
        smtp.stop()


async def test_an_email_its_batch_had_no_time_for_is_not_failed_by_the_attempt_limit(
    database_url: str, smtp: SMTPServer
) -> None:
    """A claim counts as an attempt; an email its batch never tried (the lease ran out first) must not be
    failed for reaching the limit: it waits for the next batch."""
    async with spawn_app(database_url, smtp, max_attempts=1, lease_seconds=0.001) as app:
        await app.subscribe("ada@example.com")
        await app.worker.dispatch_once()

        [row] = await app.deliveries("ada@example.com")
        assert row["status"] == "queued" and "ran out of lease time" in row["last_error"]
        assert row["attempts"] == 0  # its claim is given back
        assert smtp.received == []
        app.settings.lease_seconds = 30
        await app.dispatch_all_pending()
        assert len(smtp.to("ada@example.com")) == 1


async def test_an_expired_lease_is_reclaimed_and_sent_once(database_url: str, smtp: SMTPServer) -> None:
    async with spawn_app(database_url, smtp, lease_seconds=0.2) as app:
        await app.subscribe("ada@example.com")
        # A worker claims the row and dies before sending: nothing settles it.
        await app.pool.execute(
            "UPDATE deliveries SET status = 'sending', attempts = 1, lease_until = now() + interval '0.2 s'"
        )
        assert await app.dispatch_all_pending() == 0

        await asyncio.sleep(0.3)
        await app.worker.housekeeping()
        await app.dispatch_all_pending()

        assert len(smtp.to("ada@example.com")) == 1
        [row] = await app.deliveries("ada@example.com")
        assert (row["status"], row["reclaimed"]) == ("sent", 1)


async def test_a_late_outcome_from_a_reclaimed_attempt_does_not_overwrite_the_new_one(app: TestApp) -> None:
    await app.subscribe("ada@example.com")
    await app.dispatch_all_pending()
    [row] = await app.deliveries("ada@example.com")

    from newsletter.worker.delivery import Outcome

    stale = {**dict(row), "attempts": row["attempts"] - 1}
    await app.pool.execute("UPDATE deliveries SET status = 'sending'")
    await app.worker._record([Outcome(stale, "failed", "stale worker")])  # type: ignore[arg-type]

    [row] = await app.deliveries("ada@example.com")
    assert row["last_error"] is None


async def test_the_worker_log_carries_the_request_id_of_the_signup(
    app: TestApp, capsys: pytest.CaptureFixture[str]
) -> None:
    from newsletter.telemetry import configure_logging

    configure_logging("json")
    response = await app.client.post(
        "/subscriptions", json={"email": "ada@example.com"}, headers={"X-Request-ID": "signup-req-42"}
    )
    assert response.headers["x-request-id"] == "signup-req-42"
    await app.dispatch_all_pending()

    lines = [line for line in capsys.readouterr().err.splitlines() if "signup-req-42" in line]
    events = {line.split('"event": "')[1].split('"')[0] for line in lines}
    assert {"request", "email settled"} <= events


async def test_an_address_holding_placeholder_text_keeps_every_header_of_its_own(app: TestApp) -> None:
    """Templates are filled in one pass: an address that spells a placeholder is written as it is."""
    from tests.harness import add_confirmed

    address = "NLPHxMESSAGEIDx.NLPHxDATEx@example.com"
    await app.add_subscriber(address)
    [other] = await add_confirmed(app.pool, 1)
    await app.send_issue()
    await app.dispatch_all_pending()

    [received] = app.smtp.to(address)
    message = received.message
    assert message["To"] == address
    assert message["Message-ID"].startswith("<") and "NLPHx" not in message["Message-ID"]
    assert message["Date"].datetime is not None
    assert len(app.smtp.to(other)) == 1
    assert "NLPH" not in received.raw.decode().replace(address, "")
