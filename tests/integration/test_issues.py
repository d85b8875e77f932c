"""Issues through the admin API: who receives them, exactly once, and how the operator steers a send."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from newsletter.db.queries import Q
from newsletter.domain.vocabulary import SubscriberStatus, SubscriptionStatus, SuppressionReason
from tests.harness import AdminClient, SMTPServer, TestApp, add_confirmed, admin_client, spawn_app

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def admin(app: TestApp) -> AdminClient:
    return await admin_client(app)


async def _blocked_by(pool: asyncpg.Pool, pid: int, task: asyncio.Future[Any], timeout: float = 30) -> None:
    """Wait until a statement waits for a lock that the backend `pid` holds, or `task` ends without waiting;
    the timeout only bounds a failure."""
    deadline = time.monotonic() + timeout
    blocked = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))"
    while not task.done() and not await pool.fetchval(blocked, pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing waits for the locks of backend {pid}")
        await asyncio.sleep(0.02)


async def _draft(admin: AdminClient, lists: list[str] | None = None, **content: str) -> int:
    body = {"subject": "Issue #1", "markdown": "# Hello\n\nSome **news**.", "lists": lists or ["default"]}
    body.update(content)
    response = await admin.post("/issues", body)
    assert response.status_code == 201, response.text
    issue_id: int = response.json()["id"]
    return issue_id


async def _send_and_deliver(app: TestApp, admin: AdminClient, issue_id: int) -> dict[str, object]:
    response = await admin.post(f"/issues/{issue_id}/send")
    assert response.status_code == 202, response.text
    await app.dispatch_all_pending()
    issue: dict[str, object] = (await admin.get(f"/issues/{issue_id}")).json()
    return issue


async def test_without_a_valid_token_the_api_answers_401(app: TestApp) -> None:
    missing = await app.client.get("/api/v1/issues")
    wrong = await app.client.get("/api/v1/issues", headers={"Authorization": "Bearer nl_not-a-real-token"})
    post = await app.client.post("/api/v1/issues", json={"subject": "x", "markdown": "y"})

    assert missing.status_code == wrong.status_code == post.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["www-authenticate"] == "Bearer"


async def test_a_read_only_token_reads_but_cannot_write(app: TestApp) -> None:
    reader = await admin_client(app, scope="read")

    assert (await reader.get("/lists")).status_code == 200
    assert (await reader.post("/lists", {"slug": "x", "name": "X"})).status_code == 403


async def test_an_issue_reaches_every_confirmed_subscriber_once_and_nobody_else(
    app: TestApp, admin: AdminClient
) -> None:
    assert (await admin.post("/lists", {"slug": "weekly", "name": "Weekly"})).status_code == 201
    readers = await add_confirmed(app.pool, 20)
    both = [f"both{n}@example.com" for n in range(5)]
    for address in both:
        await app.add_subscriber(address, lists=["default", "weekly"])
    for n in range(3):
        await app.add_subscriber(f"pending{n}@example.com", status=SubscriptionStatus.PENDING)
        await app.add_subscriber(f"gone{n}@example.com", status=SubscriptionStatus.UNSUBSCRIBED)
    for n in range(2):
        await app.add_subscriber(f"blocked{n}@example.com", person=SubscriberStatus.BLOCKLISTED)
        await app.add_subscriber(f"bounced{n}@example.com")
        await app.suppress(f"bounced{n}@example.com", SuppressionReason.HARD_BOUNCE)
    issue_id = await _draft(admin, lists=["default", "weekly"])

    issue = await _send_and_deliver(app, admin, issue_id)

    received = sorted(address for message in app.smtp.received for address in message.recipients)
    assert received == sorted(readers + both)
    assert issue["status"] == "sent"
    assert issue["counts"] == {
        "total": 25,
        "pending": 0,
        "sent": 25,
        "failed": 0,
        "suppressed": 0,
        "cancelled": 0,
    }


async def test_newsletters_carry_the_headers_a_mailbox_expects(app: TestApp, admin: AdminClient) -> None:
    [reader] = await add_confirmed(app.pool, 1)
    issue_id = await _draft(admin, subject="Ünïcode subject — news", markdown="Hello *world*")

    await _send_and_deliver(app, admin, issue_id)

    [received] = app.smtp.to(reader)
    message = received.message
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == "Ünïcode subject — news"
    assert message["To"] == reader
    assert message["From"] == app.settings.sender
    assert message["Date"]
    assert message["Message-ID"].endswith("@localhost>")
    assert message["List-Id"] == "Newsletter <default.localhost>"
    assert "<em>world</em>" in received.body("html")
    assert "Hello *world*" in received.body("plain")


async def test_message_ids_are_unique(app: TestApp, admin: AdminClient) -> None:
    await add_confirmed(app.pool, 30)
    await _send_and_deliver(app, admin, await _draft(admin))

    ids = [message.message["Message-ID"] for message in app.smtp.received]
    assert len(set(ids)) == len(ids) == 30


async def test_sending_twice_with_the_same_key_replays_and_mails_once(
    app: TestApp, admin: AdminClient
) -> None:
    readers = await add_confirmed(app.pool, 10)
    issue_id = await _draft(admin)

    first = await admin.post(f"/issues/{issue_id}/send", key="send-once")
    second = await admin.post(f"/issues/{issue_id}/send", key="send-once")
    await app.dispatch_all_pending()

    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert sorted(a for m in app.smtp.received for a in m.recipients) == sorted(readers)


async def test_two_concurrent_identical_requests_get_identical_responses(
    app: TestApp, admin: AdminClient
) -> None:
    readers = await add_confirmed(app.pool, 200)
    issue_id = await _draft(admin)

    responses = await asyncio.gather(*(admin.post(f"/issues/{issue_id}/send", key="race") for _ in range(2)))
    await app.dispatch_all_pending()

    assert [r.status_code for r in responses] == [202, 202]
    assert responses[0].json() == responses[1].json()
    assert len(app.smtp.received) == len(readers)


async def test_concurrent_creates_with_one_key_create_one_issue(app: TestApp, admin: AdminClient) -> None:
    body = {"subject": "Once", "markdown": "only once"}
    responses = await asyncio.gather(*(admin.post("/issues", body, key="create-1") for _ in range(5)))

    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert await app.pool.fetchval("SELECT count(*) FROM issues") == 1


async def test_the_same_key_with_another_body_is_refused(app: TestApp, admin: AdminClient) -> None:
    first = await admin.post("/issues", {"subject": "A", "markdown": "a"}, key="k1")
    other = await admin.post("/issues", {"subject": "B", "markdown": "b"}, key="k1")

    assert first.status_code == 201
    assert other.status_code == 422
    assert await app.pool.fetchval("SELECT count(*) FROM issues") == 1


async def test_a_repeat_while_the_first_is_still_running_gets_409(
    database_url: str, smtp: SMTPServer
) -> None:
    async with spawn_app(database_url, smtp, idempotency_wait_seconds=0.5) as app:
        admin = await admin_client(app)
        issue_id = await _draft(admin)
        # Hold the issue so that the first send request blocks inside its transaction.
        blocker = await app.pool.acquire()
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT 1 FROM issues WHERE id = $1 FOR UPDATE", issue_id)
        first = asyncio.create_task(admin.post(f"/issues/{issue_id}/send", key="slow"))
        await _blocked_by(app.pool, blocker.get_server_pid(), first)
        assert not first.done()
        repeat = await admin.post(f"/issues/{issue_id}/send", key="slow")
        await transaction.rollback()
        await app.pool.release(blocker)

        assert repeat.status_code == 409
        assert (await first).status_code == 202


async def test_keys_older_than_a_day_expire(app: TestApp, admin: AdminClient) -> None:
    await admin.post("/issues", {"subject": "A", "markdown": "a"}, key="old")
    await app.pool.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")

    again = await admin.post("/issues", {"subject": "A", "markdown": "a"}, key="old")

    assert again.status_code == 201
    assert await app.pool.fetchval("SELECT count(*) FROM issues") == 2


async def test_4xx_for_a_while_is_retried_then_delivered_once(app: TestApp, admin: AdminClient) -> None:
    [reader] = await add_confirmed(app.pool, 1)
    app.smtp.handler.next_rcpt_replies.extend(["421 4.7.0 try later", "450 4.2.1 mailbox busy"])
    issue_id = await _draft(admin)
    await admin.post(f"/issues/{issue_id}/send")

    for _ in range(6):
        await app.dispatch_all_pending()
        await asyncio.sleep(0.1)

    assert len(app.smtp.to(reader)) == 1
    [row] = await app.deliveries(reader)
    assert (row["status"], row["attempts"]) == ("sent", 3)
    assert (await admin.get(f"/issues/{issue_id}")).json()["status"] == "sent"


async def test_5xx_for_one_address_fails_it_at_once_and_suppresses_it(
    app: TestApp, admin: AdminClient
) -> None:
    readers = await add_confirmed(app.pool, 5)
    app.smtp.handler.rejected[readers[2]] = "550 5.1.1 mailbox unknown"
    issue_id = await _draft(admin)

    issue = await _send_and_deliver(app, admin, issue_id)

    assert sorted(a for m in app.smtp.received for a in m.recipients) == sorted(set(readers) - {readers[2]})
    [row] = await app.deliveries(readers[2])
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert await app.pool.fetchval("SELECT count(*) FROM suppressions WHERE email = $1", readers[2]) == 1
    assert issue["counts"]["failed"] == 1 and issue["counts"]["sent"] == 4
    failed = (await admin.get(f"/issues/{issue_id}/deliveries", status="failed")).json()["items"]
    assert [item["recipient"] for item in failed] == [readers[2]]
    assert failed[0]["last_error"].startswith("550")


async def test_retry_failed_sends_the_failed_ones_again(app: TestApp, admin: AdminClient) -> None:
    readers = await add_confirmed(app.pool, 3)
    app.smtp.handler.rejected[readers[0]] = "554 5.7.1 rejected for policy reasons"
    issue_id = await _draft(admin)
    await _send_and_deliver(app, admin, issue_id)
    await app.pool.execute("DELETE FROM suppressions")
    del app.smtp.handler.rejected[readers[0]]

    retried = await admin.post(f"/issues/{issue_id}/retry-failed")
    await app.dispatch_all_pending()

    assert retried.json() == {"retried": 1}
    assert len(app.smtp.to(readers[0])) == 1
    issue = (await admin.get(f"/issues/{issue_id}")).json()
    assert issue["status"] == "sent"
    assert issue["counts"]["sent"] == 3 and issue["counts"]["failed"] == 0


async def test_pause_stops_sending_and_resume_finishes_the_rest(app: TestApp, admin: AdminClient) -> None:
    await add_confirmed(app.pool, 50)
    issue_id = await _draft(admin)
    await admin.post(f"/issues/{issue_id}/send")
    app.settings.worker_batch_size = 10
    await app.worker.dispatch_once()

    paused = await admin.post(f"/issues/{issue_id}/pause")
    await app.dispatch_all_pending()

    assert paused.json()["status"] == "paused"
    assert len(app.smtp.received) == 10
    resumed = await admin.post(f"/issues/{issue_id}/resume")
    await app.dispatch_all_pending()
    assert resumed.json()["status"] == "sending"
    assert len(app.smtp.received) == 50
    assert (await admin.get(f"/issues/{issue_id}")).json()["status"] == "sent"


async def test_cancel_stops_for_good(app: TestApp, admin: AdminClient) -> None:
    await add_confirmed(app.pool, 30)
    issue_id = await _draft(admin)
    await admin.post(f"/issues/{issue_id}/send")
    app.settings.worker_batch_size = 10
    await app.worker.dispatch_once()

    cancelled = await admin.post(f"/issues/{issue_id}/cancel")
    await app.dispatch_all_pending()

    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["counts"]["cancelled"] == 20
    assert len(app.smtp.received) == 10
    assert (await admin.post(f"/issues/{issue_id}/resume")).status_code == 409
    assert (await admin.post(f"/issues/{issue_id}/send")).status_code == 409


async def test_a_scheduled_issue_starts_at_its_time(app: TestApp, admin: AdminClient) -> None:
    await add_confirmed(app.pool, 3)
    issue_id = await _draft(admin)
    send_at = datetime.now(UTC) + timedelta(seconds=1)

    scheduled = await admin.post(f"/issues/{issue_id}/send", {"send_at": send_at.isoformat()})
    await app.worker.housekeeping()
    await app.dispatch_all_pending()
    assert scheduled.json()["status"] == "scheduled"
    assert app.smtp.received == []

    await asyncio.sleep(1.1)
    await app.worker.housekeeping()
    await app.dispatch_all_pending()
    assert len(app.smtp.received) == 3
    assert (await admin.get(f"/issues/{issue_id}")).json()["status"] == "sent"


async def test_test_send_goes_to_the_given_addresses_only(app: TestApp, admin: AdminClient) -> None:
    await add_confirmed(app.pool, 5)
    issue_id = await _draft(admin)

    response = await admin.post(f"/issues/{issue_id}/test", {"addresses": ["editor@example.com"]})
    await app.dispatch_all_pending()

    assert response.json() == {"queued": 1}
    assert [m.recipients for m in app.smtp.received] == [["editor@example.com"]]
    issue = (await admin.get(f"/issues/{issue_id}")).json()
    assert issue["status"] == "draft" and issue["counts"]["total"] == 0


async def test_a_draft_can_be_changed_and_a_sent_issue_cannot(app: TestApp, admin: AdminClient) -> None:
    issue_id = await _draft(admin)

    changed = await admin.patch(
        f"/issues/{issue_id}", {"subject": "New subject", "html": "<p>x</p>", "text": "x"}
    )
    await admin.post(f"/issues/{issue_id}/send")
    refused = await admin.patch(f"/issues/{issue_id}", {"subject": "Too late", "markdown": "y"})

    assert changed.status_code == 200 and changed.json()["subject"] == "New subject"
    assert refused.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {"markdown": "no subject"},
        {"subject": "", "markdown": "empty subject"},
        {"subject": "both", "markdown": "x", "html": "<p>x</p>", "text": "x"},
        {"subject": "html without text", "html": "<p>x</p>"},
        {"subject": "unknown list", "markdown": "x", "lists": ["nope"]},
        {"subject": "line\nbreak", "markdown": "x"},
    ],
)
async def test_invalid_issues_are_refused_with_422(
    app: TestApp, admin: AdminClient, body: dict[str, object]
) -> None:
    response = await admin.post("/issues", body)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert await app.pool.fetchval("SELECT count(*) FROM issues") == 0


async def test_lists_and_subscribers_crud_with_keyset_pagination(app: TestApp, admin: AdminClient) -> None:
    created = await admin.post("/lists", {"slug": "dev", "name": "Developers", "optin": "single"})
    duplicate = await admin.post("/lists", {"slug": "dev", "name": "Again"})
    list_id = created.json()["id"]
    for n in range(5):
        response = await admin.post(
            "/subscribers",
            {"email": f"p{n}@example.com", "name": f"P {n}", "lists": ["dev"], "status": "confirmed"},
        )
        assert response.status_code == 201, response.text
    again = await admin.post("/subscribers", {"email": "P0@example.com", "lists": ["dev"]})

    first = (await admin.get("/subscribers", list="dev", limit=2)).json()
    second = (await admin.get("/subscribers", list="dev", limit=2, cursor=first["next_cursor"])).json()
    third = (await admin.get("/subscribers", list="dev", limit=2, cursor=second["next_cursor"])).json()
    searched = (await admin.get("/subscribers", search="p3@")).json()

    assert created.status_code == 201 and duplicate.status_code == 409
    assert again.status_code == 409
    emails = [item["email"] for page in (first, second, third) for item in page["items"]]
    assert emails == [f"p{n}@example.com" for n in range(5)]
    assert third["next_cursor"] is None
    assert [item["email"] for item in searched["items"]] == ["p3@example.com"]
    assert (await admin.get(f"/lists/{list_id}")).json()["subscribers"]["confirmed"] == 5

    subscriber_id = first["items"][0]["id"]
    detail = (await admin.get(f"/subscribers/{subscriber_id}")).json()
    assert detail["subscriptions"][0]["list"] == "dev"
    assert detail["subscriptions"][0]["status"] == "confirmed"
    patched = await admin.patch(
        f"/subscribers/{subscriber_id}", {"status": "blocklisted", "attributes": {"plan": "pro"}}
    )
    assert patched.json()["status"] == "blocklisted" and patched.json()["attributes"] == {"plan": "pro"}
    assert (await admin.delete(f"/subscribers/{subscriber_id}")).status_code == 204
    assert (await admin.get(f"/subscribers/{subscriber_id}")).status_code == 404
    assert (await admin.patch(f"/lists/{list_id}", {"name": "Devs"})).json()["name"] == "Devs"
    assert (await admin.delete(f"/lists/{list_id}")).status_code == 204
    default_id = (await admin.get("/lists")).json()[0]["id"]
    assert (await admin.delete(f"/lists/{default_id}")).status_code == 409


async def test_a_pending_subscriber_added_over_the_api_gets_a_confirmation_email(
    app: TestApp, admin: AdminClient
) -> None:
    response = await admin.post("/subscribers", {"email": "new@example.com"})
    await app.dispatch_all_pending()

    assert response.json()["subscriptions"][0]["status"] == "pending"
    assert len(app.confirmation_links("new@example.com")) == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/subscribers", {"email": "not an email"}),
        ("/subscribers", {"email": "a@example.com", "name": "x\r\ny"}),
        ("/subscribers", {"email": "a@example.com", "lists": ["nope"]}),
        ("/subscribers", {"email": "a@example.com", "unexpected": 1}),
        ("/lists", {"slug": "Bad Slug!", "name": "x"}),
        ("/lists", {"slug": "ok", "name": "x\ny"}),
    ],
)
async def test_bad_admin_input_gets_422(
    app: TestApp, admin: AdminClient, path: str, body: dict[str, object]
) -> None:
    response = await admin.post(path, body)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_unknown_ids_get_404(app: TestApp, admin: AdminClient) -> None:
    for path in ("/issues/999", "/lists/999", "/subscribers/999", "/issues/999/deliveries"):
        assert (await admin.get(path)).status_code == 404
    assert (await admin.post("/issues/999/send")).status_code == 404


async def test_ids_beyond_bigint_and_nul_bytes_are_client_errors_not_503(
    app: TestApp, admin: AdminClient
) -> None:
    """Found by schemathesis: PostgreSQL refused these values and the API answered 'database unavailable'."""
    huge = "/issues/9223372036854775809"
    for response in (
        await admin.get(huge),
        await admin.post(f"{huge}/retry-failed"),
        await admin.delete("/lists/44474991972497318290657955496064974848"),
        await admin.get("/subscribers", search="a\x00b"),
    ):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"


async def test_two_issues_sending_at_once_each_reach_their_readers_once(
    app: TestApp, admin: AdminClient
) -> None:
    assert (await admin.post("/lists", {"slug": "weekly", "name": "Weekly"})).status_code == 201
    readers = await add_confirmed(app.pool, 23)
    weekly = await add_confirmed(app.pool, 9, prefix="weekly", list_slug="weekly")
    first, second = await _draft(admin), await _draft(admin, lists=["weekly"], subject="Issue #2")
    await admin.post(f"/issues/{first}/send")
    # A confirmation email queued between the two fan-outs goes out too, before the newsletters.
    signup = await app.client.post("/subscriptions", json={"email": "new@example.com"})
    await admin.post(f"/issues/{second}/send")
    app.settings.worker_batch_size = 7

    await app.dispatch_all_pending()

    assert signup.status_code == 202
    assert len(app.smtp.to("new@example.com")) == 1
    assert sorted(
        a for m in app.smtp.received if m.message["Subject"] == "Issue #1" for a in m.recipients
    ) == sorted(readers)
    assert sorted(
        a for m in app.smtp.received if m.message["Subject"] == "Issue #2" for a in m.recipients
    ) == sorted(weekly)
    for issue_id, total in ((first, 23), (second, 9)):
        issue = (await admin.get(f"/issues/{issue_id}")).json()
        assert issue["status"] == "sent" and issue["counts"]["sent"] == total
        seen: list[int] = []
        cursor = None
        while True:
            page = (
                await admin.get(
                    f"/issues/{issue_id}/deliveries", limit=4, **({"cursor": cursor} if cursor else {})
                )
            ).json()
            seen.extend(item["id"] for item in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == total and seen == sorted(set(seen))


async def test_pause_parks_a_delivery_waiting_for_its_retry(app: TestApp, admin: AdminClient) -> None:
    readers = await add_confirmed(app.pool, 4)
    app.smtp.handler.rejected[readers[1]] = "451 4.3.0 try again later"
    issue_id = await _draft(admin)
    await admin.post(f"/issues/{issue_id}/send")
    await app.dispatch_all_pending()
    del app.smtp.handler.rejected[readers[1]]

    paused = await admin.post(f"/issues/{issue_id}/pause")
    await app.pool.execute(
        "UPDATE deliveries SET next_attempt_at = now() WHERE next_attempt_at <> 'infinity'"
    )
    await app.dispatch_all_pending()

    assert paused.json()["status"] == "paused"
    parked = await app.pool.fetchval(
        "SELECT status = 'queued' AND next_attempt_at = 'infinity' FROM deliveries WHERE recipient = $1",
        readers[1],
    )
    assert parked
    assert app.smtp.to(readers[1]) == []
    await admin.post(f"/issues/{issue_id}/resume")
    await app.dispatch_all_pending()
    assert len(app.smtp.to(readers[1])) == 1
    assert (await admin.get(f"/issues/{issue_id}")).json()["status"] == "sent"


async def test_an_issue_whose_ids_are_interleaved_with_other_emails_is_sent_in_full(
    database_url: str, smtp: SMTPServer
) -> None:
    """Claims read a window of ids behind the issue's cursor (twice the batch); emails queued by other
    requests during a fan-out take ids inside the issue's range, so a window can hold none of the issue's
    deliveries. Such a window moves the cursor and the claim goes on: the send must not stall there."""
    async with spawn_app(database_url, smtp, worker_batch_size=2) as app:
        admin = await admin_client(app)
        await add_confirmed(app.pool, 5, prefix="reader")
        before = await app.pool.fetchval("SELECT coalesce(max(id), 0) FROM deliveries")
        for n in range(10):  # 10 confirmations: 5 windows' worth of ids that are not the issue's
            assert (await app.subscribe(f"newcomer{n}@example.com")).status_code == 202
        issue_id = await _draft(admin)
        assert (await admin.post(f"/issues/{issue_id}/send")).status_code == 202
        # As if the confirmations had drawn their ids while the fan-out was running.
        await app.pool.execute("UPDATE issues SET claimed_through = $2 WHERE id = $1", issue_id, before)

        await app.dispatch_all_pending()

        issue = (await admin.get(f"/issues/{issue_id}")).json()
        assert issue["status"] == "sent"
        assert issue["counts"]["sent"] == 5
        for n in range(5):
            assert len(smtp.to(f"reader{n}@example.com")) == 1
        for n in range(10):
            assert len(smtp.to(f"newcomer{n}@example.com")) == 1


def while_in_flight(app: TestApp, admin: AdminClient, path: str) -> None:
    """Posts `path` (a pause, a cancel) from inside the SMTP server while the worker's batch is being sent,
    between its claim and its record."""
    loop = asyncio.get_running_loop()

    def post() -> None:
        response = asyncio.run_coroutine_threadsafe(admin.post(path), loop).result(timeout=10)
        assert response.status_code == 202, response.text

    app.smtp.handler.on_next_rcpt = post


async def _retried_after_an_action_in_flight(
    app: TestApp, admin: AdminClient, action: str
) -> tuple[int, list[str]]:
    """An issue to three readers whose server answers 451 while `action` (pause, cancel) happens with their
    emails in flight; then the server takes mail again and every retry not parked comes due and is
    dispatched. Returns the issue and the readers."""
    readers = await add_confirmed(app.pool, 3)
    app.smtp.handler.rejected.update({reader: "451 4.3.0 try again later" for reader in readers})
    issue_id = await _draft(admin)
    await admin.post(f"/issues/{issue_id}/send")
    while_in_flight(app, admin, f"/issues/{issue_id}/{action}")
    await app.dispatch_all_pending()
    app.smtp.handler.rejected.clear()
    await app.pool.execute(
        "UPDATE deliveries SET next_attempt_at = now()"
        " WHERE status = 'queued' AND next_attempt_at <> 'infinity'"
    )
    await app.dispatch_all_pending()
    return issue_id, readers


async def test_an_issue_paused_while_its_last_deliveries_are_sent_is_sent(
    app: TestApp, admin: AdminClient
) -> None:
    await add_confirmed(app.pool, 3)
    issue_id = await _draft(admin)
    await admin.post(f"/issues/{issue_id}/send")
    while_in_flight(app, admin, f"/issues/{issue_id}/pause")

    await app.dispatch_all_pending()

    assert app.smtp.handler.on_next_rcpt is None  # the pause happened
    issue = (await admin.get(f"/issues/{issue_id}")).json()
    assert len(app.smtp.received) == 3
    assert issue["status"] == "sent" and issue["finished_at"] is not None
    assert issue["counts"]["sent"] == 3 and issue["counts"]["pending"] == 0


async def test_a_delivery_in_flight_when_its_issue_is_paused_waits_to_be_retried_until_resume(
    app: TestApp, admin: AdminClient
) -> None:
    issue_id, readers = await _retried_after_an_action_in_flight(app, admin, "pause")

    assert app.smtp.received == []
    parked = await app.pool.fetch(
        "SELECT status, next_attempt_at = 'infinity' AS parked FROM deliveries WHERE issue_id = $1", issue_id
    )
    assert [tuple(row) for row in parked] == [("queued", True)] * 3
    assert (await admin.get(f"/issues/{issue_id}")).json()["status"] == "paused"
    await admin.post(f"/issues/{issue_id}/resume")
    await app.dispatch_all_pending()
    assert sorted(address for email in app.smtp.received for address in email.recipients) == sorted(readers)
    assert (await admin.get(f"/issues/{issue_id}")).json()["status"] == "sent"


async def test_a_delivery_in_flight_when_its_issue_is_cancelled_is_not_retried(
    app: TestApp, admin: AdminClient
) -> None:
    issue_id, _ = await _retried_after_an_action_in_flight(app, admin, "cancel")

    assert app.smtp.received == []
    issue = (await admin.get(f"/issues/{issue_id}")).json()
    assert issue["status"] == "cancelled" and issue["finished_at"] is not None
    assert issue["counts"]["cancelled"] == 3 and issue["counts"]["pending"] == 0
    rows = await app.pool.fetch("SELECT status, last_error FROM deliveries WHERE issue_id = $1", issue_id)
    assert {row["status"] for row in rows} == {"cancelled"}
    assert all(row["last_error"].startswith("issue cancelled (last attempt: 451") for row in rows)


async def test_retry_failed_on_a_paused_issue_waits_for_resume(app: TestApp, admin: AdminClient) -> None:
    readers = await add_confirmed(app.pool, 3)
    app.settings.worker_batch_size = 1
    app.smtp.handler.rejected[readers[2]] = "554 5.7.1 rejected for policy reasons"
    issue_id = await _draft(admin)
    await admin.post(f"/issues/{issue_id}/send")
    await app.worker.dispatch_once()
    await app.worker.dispatch_once()
    await app.worker.dispatch_once()
    await app.pool.execute("DELETE FROM suppressions")
    del app.smtp.handler.rejected[readers[2]]
    await app.pool.execute("UPDATE issues SET status = 'paused' WHERE id = $1", issue_id)

    retried = await admin.post(f"/issues/{issue_id}/retry-failed")
    await app.dispatch_all_pending()

    assert retried.json() == {"retried": 1}
    assert app.smtp.to(readers[2]) == []
    await admin.post(f"/issues/{issue_id}/resume")
    await app.dispatch_all_pending()
    assert len(app.smtp.to(readers[2])) == 1
    assert (await admin.get(f"/issues/{issue_id}")).json()["status"] == "sent"


async def test_a_lease_reclaimed_after_its_issue_was_cancelled_is_not_sent(
    app: TestApp, admin: AdminClient
) -> None:
    """A worker died holding deliveries; the issue was cancelled before the leases expired."""
    await add_confirmed(app.pool, 3)
    issue_id = await _draft(admin)
    await admin.post(f"/issues/{issue_id}/send")
    await app.pool.execute(
        "UPDATE deliveries SET status = 'sending', attempts = 1, lease_until = now() - interval '1 second'"
        " WHERE issue_id = $1",
        issue_id,
    )
    await app.pool.execute("UPDATE issues SET claimed_through = last_delivery_id WHERE id = $1", issue_id)
    assert (await admin.post(f"/issues/{issue_id}/cancel")).status_code == 202

    await app.worker.housekeeping()
    await app.dispatch_all_pending()

    assert app.smtp.received == []
    issue = (await admin.get(f"/issues/{issue_id}")).json()
    assert issue["status"] == "cancelled"
    assert issue["counts"]["cancelled"] == 3 and issue["counts"]["pending"] == 0


async def test_a_retry_recorded_while_the_issue_resumes_is_sent(
    app: TestApp, admin: AdminClient, database_url: str
) -> None:
    """A worker records a transient failure while an operator's resume is running: the record waits for the
    resume and sees the issue sending (read from its snapshot, it saw 'paused' and parked the retry for
    good, under an issue that was sending again)."""
    from newsletter.db.database import Database
    from newsletter.services.sending.issues import resume_issue
    from newsletter.worker.delivery import Outcome

    await add_confirmed(app.pool, 1)
    issue_id = await _draft(admin)
    await admin.post(f"/issues/{issue_id}/send")
    [claimed] = await app.pool.fetch(Q.claim_deliveries, 10, 60)
    await admin.post(f"/issues/{issue_id}/pause")
    operator = await asyncpg.connect(database_url)
    try:
        resuming = operator.transaction()
        await resuming.start()
        await resume_issue(Database.on(operator), issue_id)
        recording = asyncio.ensure_future(
            app.worker._record([Outcome(claimed, "queued", "451 4.3.0 try again later", delay=0.0)])
        )
        await _blocked_by(app.pool, operator.get_server_pid(), recording)
        assert not recording.done()  # it waits for the resume
        await resuming.commit()
        await recording
    finally:
        await operator.close()

    await app.dispatch_all_pending()

    assert len(app.smtp.received) == 1
    issue = (await admin.get(f"/issues/{issue_id}")).json()
    assert issue["status"] == "sent" and issue["counts"]["pending"] == 0
