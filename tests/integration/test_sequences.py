"""Sequences (SPEC section 12), end to end: written through the API, entered by confirming, swept by the
worker into the ledger, sent to a real SMTP server; days pass on the database's clock, not in the tests."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from newsletter.db.database import Database
from newsletter.services.automations.sequences import Swept, sweep
from tests.harness import AdminClient, TestApp, add_confirmed, admin_client

pytestmark = pytest.mark.asyncio

DAY = 86400
WELCOME = [(0, "Welcome"), (2 * DAY, "Tips"), (7 * DAY, "A week in")]


@pytest.fixture
async def admin(app: TestApp) -> AdminClient:
    return await admin_client(app)


def subjects(app: TestApp, address: str) -> list[str]:
    """The step emails an address received, in order (confirmations left out)."""
    return [
        str(received.message["Subject"])
        for received in app.smtp.to(address)
        if "/subscriptions/confirm?" not in received.body("plain")
    ]


async def _welcome(admin: AdminClient, list_slug: str = "default") -> dict[str, Any]:
    response = await admin.post("/sequences", {"name": "Welcome", "list": list_slug})
    assert response.status_code == 201, response.text
    sequence: dict[str, Any] = response.json()
    for delay, subject in WELCOME:
        step = await admin.post(
            f"/sequences/{sequence['id']}/steps",
            {"delay_seconds": delay, "subject": subject, "markdown": f"This is **{subject}**."},
        )
        assert step.status_code == 201, step.text
    return sequence


async def _sign_up(app: TestApp, address: str) -> None:
    await app.subscribe(address)
    await app.dispatch_all_pending()
    response = await app.confirm(app.confirmation_links(address)[-1])
    assert response.status_code == 200


async def test_a_welcome_sequence_sends_each_step_at_its_time_once(app: TestApp, admin: AdminClient) -> None:
    sequence = await _welcome(admin)
    await _sign_up(app, "ada@example.com")

    assert await app.run_sequences() == 1
    assert subjects(app, "ada@example.com") == ["Welcome"]
    assert await app.run_sequences() == 0, "nothing more is due yet"

    await app.pass_time(2 * DAY - 60)
    assert await app.run_sequences() == 0, "a minute early"
    await app.pass_time(60)
    await app.run_sequences()
    assert subjects(app, "ada@example.com") == ["Welcome", "Tips"]

    await app.pass_time(7 * DAY)
    await app.run_sequences()
    await app.pass_time(30 * DAY)
    await app.run_sequences()
    assert subjects(app, "ada@example.com") == ["Welcome", "Tips", "A week in"]

    detail = (await admin.get(f"/sequences/{sequence['id']}")).json()
    assert detail["members"] == {"active": 0, "completed": 1, "left": 0}
    assert [step["counts"] for step in detail["steps"]] == [{"waiting": 0, "queued": 0, "sent": 1}] * 3
    await app.events_settled()
    events = (await admin.get("/events", type=["sequence.entered", "sequence.completed"])).json()["items"]
    assert [event["type"] for event in events] == ["sequence.entered", "sequence.completed"]
    assert events[0]["data"]["sequence_id"] == sequence["id"]


async def test_a_step_email_is_a_newsletter_of_the_list_with_its_unsubscribe(
    app: TestApp, admin: AdminClient
) -> None:
    await _welcome(admin)
    await _sign_up(app, "ada@example.com")
    await app.run_sequences()

    [received] = [r for r in app.smtp.to("ada@example.com") if r.message["Subject"] == "Welcome"]
    assert received.message["List-Id"] == "Newsletter <default.localhost>"
    assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = received.message["List-Unsubscribe"][1:-1]
    assert url.startswith(f"{app.settings.base_url}/unsubscribe/")
    assert url in received.body("plain") and f'href="{url}"' in received.body("html")
    assert "<strong>Welcome</strong>" in received.body("html")
    [delivery] = [row for row in await app.deliveries("ada@example.com") if row["kind"] == "sequence"]
    assert delivery["status"] == "sent" and delivery["step_id"] is not None


async def test_someone_who_unsubscribes_after_the_first_step_gets_nothing_more(
    app: TestApp, admin: AdminClient
) -> None:
    sequence = await _welcome(admin)
    await _sign_up(app, "ada@example.com")
    await app.run_sequences()
    [received] = [r for r in app.smtp.to("ada@example.com") if r.message["Subject"] == "Welcome"]

    one_click = await app.client.post(
        received.message["List-Unsubscribe"][1:-1], data={"List-Unsubscribe": "One-Click"}
    )
    assert one_click.status_code == 200
    await app.pass_time(30 * DAY)
    await app.run_sequences()

    assert subjects(app, "ada@example.com") == ["Welcome"]
    [member] = (await admin.get(f"/sequences/{sequence['id']}/members")).json()["items"]
    assert (member["status"], member["left_reason"], member["steps_sent"]) == ("left", "unsubscribed", 1)


@pytest.mark.parametrize("how", ["suppressed", "blocklisted", "erased"])
async def test_people_leave_when_suppressed_blocklisted_or_erased(
    app: TestApp, admin: AdminClient, how: str
) -> None:
    sequence = await _welcome(admin)
    await _sign_up(app, "ada@example.com")
    await app.run_sequences()
    if how == "suppressed":
        await app.suppress("ada@example.com")
    elif how == "blocklisted":
        await app.block("ada@example.com")
    else:
        [person] = (await admin.get("/subscribers", email="ada@example.com")).json()["items"]
        assert (await admin.delete(f"/subscribers/{person['id']}")).status_code == 204

    await app.pass_time(30 * DAY)
    await app.run_sequences()

    assert subjects(app, "ada@example.com") == ["Welcome"]
    members = (await admin.get(f"/sequences/{sequence['id']}/members")).json()["items"]
    if how == "erased":
        assert members == []
        assert await app.pool.fetchval("SELECT count(*) FROM sequence_members") == 0
        assert await app.tables_holding("ada@example.com") == [], "nothing of the person in any column"
    else:
        assert [(m["status"], m["left_reason"]) for m in members] == [("left", how)]


async def test_a_step_queued_before_the_person_left_is_not_sent(app: TestApp, admin: AdminClient) -> None:
    await _welcome(admin)
    await _sign_up(app, "ada@example.com")
    await app.worker.sweep_sequences()  # queued, not yet sent
    await app.leave("ada@example.com")

    await app.dispatch_all_pending()

    assert subjects(app, "ada@example.com") == []
    [delivery] = [row for row in await app.deliveries("ada@example.com") if row["kind"] == "sequence"]
    assert (delivery["status"], delivery["last_error"]) == ("cancelled", "no longer subscribed")


async def test_every_way_of_confirming_enters_and_imports_only_when_asked(
    app: TestApp, admin: AdminClient
) -> None:
    await app.add_list("single", optin="single")
    await _welcome(admin, "single")
    await app.subscribe("form@example.com", list="single")  # single opt-in: confirmed at once
    created = await admin.post(
        "/subscribers", {"email": "api@example.com", "lists": ["single"], "status": "confirmed"}
    )
    assert created.status_code == 201, created.text

    async def import_csv(address: str, **params: Any) -> None:
        response = await app.client.post(
            "/api/v1/subscribers/import",
            params={"list": "single", **params},
            content=f"email\n{address}\n".encode(),
            headers={**admin.headers, "Content-Type": "text/csv"},
        )
        assert response.status_code == 200, response.text

    await import_csv("imported@example.com")
    await import_csv("welcomed@example.com", enter_sequences="true")
    await app.run_sequences()

    for address in ("form@example.com", "api@example.com", "welcomed@example.com"):
        assert subjects(app, address) == ["Welcome"], address
    assert subjects(app, "imported@example.com") == []


async def test_people_confirmed_before_enter_only_when_enrolled_and_once(
    app: TestApp, admin: AdminClient
) -> None:
    readers = await add_confirmed(app.pool, 3)
    await app.suppress(readers[2])
    sequence = await _welcome(admin)
    await app.run_sequences()
    assert subjects(app, readers[0]) == []

    first = await admin.post(f"/sequences/{sequence['id']}/enroll")
    again = await admin.post(f"/sequences/{sequence['id']}/enroll")
    await app.run_sequences()

    assert (first.json(), again.json()) == ({"entered": 2}, {"entered": 0})
    assert [subjects(app, reader) for reader in readers] == [["Welcome"], ["Welcome"], []]
    assert (await admin.post("/sequences/999999/enroll")).status_code == 404


async def test_pausing_holds_the_due_steps_and_resuming_sends_them(app: TestApp, admin: AdminClient) -> None:
    sequence = await _welcome(admin)
    paused = await admin.post(f"/sequences/{sequence['id']}/pause")
    assert paused.json()["status"] == "paused"
    await _sign_up(app, "ada@example.com")  # people still enter a paused sequence

    await app.pass_time(3 * DAY)
    await app.run_sequences()
    assert subjects(app, "ada@example.com") == []

    assert (await admin.post(f"/sequences/{sequence['id']}/resume")).json()["status"] == "active"
    await app.run_sequences()
    assert subjects(app, "ada@example.com") == ["Welcome"]


async def test_no_step_is_queued_twice_even_when_swept_again(app: TestApp, admin: AdminClient) -> None:
    """The unique key of the ledger, not a check: a member put back to before a step they got (as a crash
    between two statements could) is swept again, and the step is not queued a second time."""
    await _welcome(admin)
    await add_confirmed(app.pool, 200, prefix="many")
    sequence_id = (await admin.get("/sequences")).json()[0]["id"]
    await admin.post(f"/sequences/{sequence_id}/enroll")
    swept = await asyncio.gather(*(app.worker.sweep_sequences() for _ in range(4)))
    assert sum(swept) == 200, "concurrent sweeps share the due members"

    await app.pool.execute(
        "UPDATE sequence_members SET steps_sent = 0, status = 'active', next_due_at = now() - interval '1 s'"
    )
    assert await app.worker.sweep_sequences() == 0
    await app.dispatch_all_pending()

    assert len(app.smtp.received) == 200
    assert await app.pool.fetchval("SELECT count(*) FROM deliveries WHERE kind = 'sequence'") == 200


async def test_a_sweep_on_two_connections_queues_each_step_once_batch_by_batch(
    app: TestApp, admin: AdminClient
) -> None:
    """Small batches, so that the two connections take turns many times: they share the members between them
    (SKIP LOCKED), each batch is heard of as it commits, and the ledger holds one delivery per person."""
    await _welcome(admin)
    await add_confirmed(app.pool, 500, prefix="many")
    sequence_id = (await admin.get("/sequences")).json()[0]["id"]
    await admin.post(f"/sequences/{sequence_id}/enroll")
    batches: list[int] = []

    swept = await sweep(Database(app.pool), 7, connections=2, on_queued=batches.append)

    assert swept == Swept(due=500, queued=500)
    assert sum(batches) == 500 and max(batches) <= 7 and len(batches) >= 500 // 7
    steps = await app.pool.fetch(
        "SELECT subscriber_id, count(*) AS n FROM deliveries WHERE kind = 'sequence' GROUP BY subscriber_id"
    )
    assert len(steps) == 500 and all(row["n"] == 1 for row in steps)
    assert await app.pool.fetchval("SELECT count(*) FROM sequence_members WHERE steps_sent = 1") == 500


async def test_editing_a_step_changes_what_is_sent_from_then_on(app: TestApp, admin: AdminClient) -> None:
    sequence = await _welcome(admin)
    await _sign_up(app, "ada@example.com")
    await app.run_sequences()
    steps = (await admin.get(f"/sequences/{sequence['id']}/steps")).json()

    changed = await admin.patch(
        f"/sequences/{sequence['id']}/steps/{steps[1]['id']}",
        {"subject": "Better tips", "delay_seconds": DAY},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["markdown"] == "This is **Tips**.", "the content stays as it was written"
    both = await admin.patch(
        f"/sequences/{sequence['id']}/steps/{steps[1]['id']}", {"markdown": "x", "html": "<p>x</p>"}
    )
    assert both.status_code == 422 and "not both" in both.text
    nulls = await admin.patch(
        f"/sequences/{sequence['id']}/steps/{steps[1]['id']}", {"subject": None, "markdown": None}
    )
    assert nulls.status_code == 200, "a field sent as null stays as it was"
    assert (nulls.json()["subject"], nulls.json()["markdown"]) == ("Better tips", "This is **Tips**.")
    await app.pass_time(DAY)
    await app.run_sequences()

    assert subjects(app, "ada@example.com") == ["Welcome", "Better tips"], "sooner, and with its new subject"


async def test_deleting_a_step_cancels_its_queued_emails_and_moves_people_on(
    app: TestApp, admin: AdminClient
) -> None:
    sequence = await _welcome(admin)
    await _sign_up(app, "ada@example.com")
    await app.run_sequences()
    await app.pass_time(2 * DAY)
    await app.worker.sweep_sequences()  # "Tips" queued
    steps = (await admin.get(f"/sequences/{sequence['id']}/steps")).json()

    assert (await admin.delete(f"/sequences/{sequence['id']}/steps/{steps[1]['id']}")).status_code == 204
    await app.dispatch_all_pending()
    left = (await admin.get(f"/sequences/{sequence['id']}/steps")).json()
    assert [(step["position"], step["subject"]) for step in left] == [(1, "Welcome"), (2, "A week in")]
    await app.pass_time(7 * DAY)
    await app.run_sequences()

    assert subjects(app, "ada@example.com") == ["Welcome", "A week in"]
    cancelled = await app.pool.fetchval(
        "SELECT last_error FROM deliveries WHERE kind = 'sequence' AND status = 'cancelled'"
    )
    assert cancelled == "step deleted"


async def test_a_deleted_list_takes_its_sequences_and_sends_nothing_more(
    app: TestApp, admin: AdminClient
) -> None:
    await app.add_list("club")
    await _welcome(admin, "club")
    await app.add_subscriber("ada@example.com", lists=["club"])
    await app.worker.sweep_sequences()  # the welcome queued
    list_id = await app.pool.fetchval("SELECT id FROM lists WHERE slug = 'club'")

    assert (await admin.delete(f"/lists/{list_id}")).status_code == 204
    await app.pass_time(30 * DAY)
    await app.run_sequences()

    assert subjects(app, "ada@example.com") == []
    assert (await admin.get("/sequences")).json() == []
    assert await app.pool.fetchval("SELECT count(*) FROM sequence_members") == 0


async def test_someone_who_comes_back_resumes_without_a_repeat(app: TestApp, admin: AdminClient) -> None:
    await _welcome(admin)
    await _sign_up(app, "ada@example.com")
    await app.run_sequences()
    await app.leave("ada@example.com")
    await app.pass_time(10 * DAY)

    await _sign_up(app, "ada@example.com")
    await app.run_sequences()
    assert subjects(app, "ada@example.com") == ["Welcome"], "the next step waits its delay from coming back"
    await app.pass_time(2 * DAY)
    await app.run_sequences()

    assert subjects(app, "ada@example.com") == ["Welcome", "Tips"]


async def test_members_by_step_and_status_page_by_page(app: TestApp, admin: AdminClient) -> None:
    sequence = await _welcome(admin)
    readers = await add_confirmed(app.pool, 5)
    await admin.post(f"/sequences/{sequence['id']}/enroll")
    await app.run_sequences()
    await app.leave(readers[4])
    path = f"/sequences/{sequence['id']}/members"

    first = (await admin.get(path, step=1, status="active", limit=2)).json()
    second = (await admin.get(path, step=1, status="active", limit=2, cursor=first["next_cursor"])).json()

    emails = [m["email"] for m in first["items"] + second["items"]]
    assert emails == readers[:4]
    assert (await admin.get(path, status="left")).json()["items"][0]["email"] == readers[4]
    assert (await admin.get(path, step=0)).json()["items"] == []
    assert (await admin.get(path, status="gone")).status_code == 422
    assert (await admin.get("/sequences/999999/members")).status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"subject": "Hi", "markdown": "x", "delay_seconds": -1}, "greater than or equal to 0"),
        ({"subject": "Hi", "markdown": "x", "delay_seconds": 10**12}, "less than or equal to"),
        ({"subject": "", "markdown": "x", "delay_seconds": 0}, "subject: must not be empty"),
        ({"subject": "Hi\nBcc: x@example.com", "markdown": "x", "delay_seconds": 0}, "one line"),
        ({"subject": "Hi", "markdown": "x", "html": "<p>x</p>", "delay_seconds": 0}, "not both"),
        ({"subject": "Hi", "html": "<p>x</p>", "delay_seconds": 0}, "both html and text"),
        ({"markdown": "x", "delay_seconds": 0}, "subject"),
    ],
)
async def test_a_step_that_cannot_be_sent_is_refused_at_save(
    app: TestApp, admin: AdminClient, body: dict[str, Any], message: str
) -> None:
    sequence = (await admin.post("/sequences", {"name": "Welcome"})).json()

    response = await admin.post(f"/sequences/{sequence['id']}/steps", body)

    assert response.status_code == 422
    assert message in response.text
    assert (await admin.get(f"/sequences/{sequence['id']}")).json()["steps"] == []


async def test_sequences_of_unknown_lists_or_ids_are_clear_errors(app: TestApp, admin: AdminClient) -> None:
    unknown_list = await admin.post("/sequences", {"name": "Welcome", "list": "nope"})
    assert unknown_list.status_code == 422 and "nope" in unknown_list.json()["detail"]
    assert (await admin.post("/sequences", {"name": ""})).status_code == 422
    assert (await admin.post("/sequences", {"name": "x", "extra": 1})).status_code == 422
    step = {"subject": "Hi", "markdown": "x", "delay_seconds": 0}
    assert (await admin.post("/sequences/999999/steps", step)).status_code == 404
    assert (await admin.patch("/sequences/999999", {"name": "x"})).status_code == 404
    assert (await admin.delete("/sequences/999999")).status_code == 404
    sequence = (await admin.post("/sequences", {"name": "Welcome"})).json()
    assert (await admin.patch(f"/sequences/{sequence['id']}/steps/999999", step)).status_code == 404
    assert (await admin.delete(f"/sequences/{sequence['id']}/steps/999999")).status_code == 404
    renamed = await admin.patch(f"/sequences/{sequence['id']}", {"name": "Hello"})
    assert renamed.json()["name"] == "Hello"


async def test_a_repeated_create_with_the_same_key_makes_one_sequence(
    app: TestApp, admin: AdminClient
) -> None:
    responses = await asyncio.gather(
        *(admin.post("/sequences", {"name": "Welcome"}, key="same-key") for _ in range(3))
    )

    assert {response.json()["id"] for response in responses if response.status_code == 201} != set()
    assert len((await admin.get("/sequences")).json()) == 1


async def test_the_worker_loop_sends_the_welcome_within_seconds(app: TestApp, admin: AdminClient) -> None:
    """The running worker, not a test's call: its housekeeping sweeps every second and wakes the lanes."""
    await _welcome(admin)
    stopping = asyncio.Event()
    running = asyncio.create_task(app.worker.run(stopping))
    try:
        await app.subscribe("ada@example.com")
        async with asyncio.timeout(10):
            while not app.confirmation_links("ada@example.com"):
                await asyncio.sleep(0.05)
        await app.confirm(app.confirmation_links("ada@example.com")[0])
        async with asyncio.timeout(10):
            while subjects(app, "ada@example.com") != ["Welcome"]:
                await asyncio.sleep(0.05)
    finally:
        stopping.set()
        await running


async def test_the_metrics_count_steps_queued_and_sent_and_events_written(
    app: TestApp, admin: AdminClient
) -> None:
    queued = await app.metric("newsletter_sequence_steps_queued_total")
    sent = await app.metric("newsletter_deliveries_total", kind="sequence", status="sent")
    await _welcome(admin)
    await add_confirmed(app.pool, 3)
    sequence_id = (await admin.get("/sequences")).json()[0]["id"]
    await admin.post(f"/sequences/{sequence_id}/enroll")

    await app.run_sequences()
    await app.worker.housekeeping()

    assert await app.metric("newsletter_sequence_steps_queued_total") == queued + 3
    assert await app.metric("newsletter_deliveries_total", kind="sequence", status="sent") == sent + 3
    last_event = await app.pool.fetchval("SELECT max(id) FROM events")
    assert await app.metric("newsletter_events_written") == last_event
