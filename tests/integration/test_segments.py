"""Segments (SPEC section 13) on the real app and database: the compiled SQL agrees with the Python evaluation
of the same tree on a seeded population, the API saves and counts them, and an issue sent to a segment reaches
exactly the matching confirmed people of its list, each of whom can still leave that list alone."""

from __future__ import annotations

import json
import random
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from newsletter.domain.segments import Person, Segment, matches
from tests.harness import AdminClient, TestApp, add_confirmed, admin_client
from tests.segment_expressions import LISTS, expression, person

pytestmark = pytest.mark.asyncio

POPULATION = 150
EXPRESSIONS = 30


@pytest.fixture
async def admin(app: TestApp) -> AdminClient:
    return await admin_client(app)


async def _seed(pool: asyncpg.Pool, seed: int) -> tuple[dict[int, Person], datetime]:
    """A population drawn from `seed`: attributes, lists confirmed at various times, issues received."""
    rng = random.Random(seed)
    now: datetime = await pool.fetchval("SELECT newsletter_now()")
    for slug in LISTS:
        await pool.execute("INSERT INTO lists (slug, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", slug)
    issue_ids = [
        await pool.fetchval(
            "INSERT INTO issues (subject, html, text_body) VALUES ('x', 'x', 'x') RETURNING id"
        )
        for _ in range(2)
    ]
    assert issue_ids == [1, 2], "the expressions name issues 1 and 2"
    people: dict[int, Person] = {}
    for number in range(POPULATION):
        drawn = person(rng, number, now)
        subscriber_id = await pool.fetchval(
            "INSERT INTO subscribers (email, name, attributes, created_at) "
            "VALUES ($1, $2, $3::text::jsonb, $4) RETURNING id",
            drawn.email,
            drawn.name,
            json.dumps(drawn.attributes),
            drawn.subscribed_at,
        )
        for slug in LISTS:
            confirmed_at = drawn.confirmed.get(slug)
            # Those not confirmed on a list are pending or unsubscribed there, or not in it at all.
            status = "confirmed" if confirmed_at else rng.choice(["pending", "unsubscribed", None])
            if status is not None:
                await pool.execute(
                    "INSERT INTO subscriptions (subscriber_id, list_id, status, confirmed_at, source) "
                    "SELECT $1, id, $2, $3, 'test' FROM lists WHERE slug = $4",
                    subscriber_id,
                    status,
                    confirmed_at,
                    slug,
                )
        for issue_id in (1, 2):
            status = "sent" if issue_id in drawn.received else rng.choice(["failed", None])
            if status is not None:
                await pool.execute(
                    "INSERT INTO deliveries (kind, issue_id, subscriber_id, list_id, recipient, status) "
                    "SELECT 'newsletter', $1, $2, id, $3, $4 FROM lists WHERE slug = 'default'",
                    issue_id,
                    subscriber_id,
                    drawn.email,
                    status,
                )
        people[subscriber_id] = drawn
    return people, now


async def test_thirty_random_expressions_match_what_python_makes_of_them(app: TestApp) -> None:
    people, now = await _seed(app.pool, seed=1613)
    rng = random.Random(2026)
    nonempty = 0
    for _ in range(EXPRESSIONS):
        text = expression(rng)
        segment = Segment.parse(text)
        compiled = segment.compile("subscribers")
        rows = await app.pool.fetch(
            f"SELECT id FROM subscribers WHERE {compiled.sql}",  # the compiler's: values are parameters
            *compiled.parameters,
        )
        expected = {
            subscriber_id for subscriber_id, drawn in people.items() if matches(segment.tree, drawn, now)
        }
        assert {row["id"] for row in rows} == expected, text
        nonempty += 0 < len(expected) < len(people)
    assert nonempty >= EXPRESSIONS // 3, "the expressions tell people apart"


async def test_segments_through_the_api(app: TestApp, admin: AdminClient) -> None:
    await app.add_subscriber("pro@example.com")
    await app.pool.execute('UPDATE subscribers SET attributes = \'{"plan": "pro"}\'')
    await app.add_subscriber("free@example.com")

    created = await admin.post("/segments", {"name": "Pro", "expression": 'attributes.plan = "pro"'})
    assert created.status_code == 201, created.text
    segment = created.json()
    assert segment["expression"] == 'attributes.plan = "pro"'
    assert (await admin.get(f"/segments/{segment['id']}/count")).json() == {"count": 1, "estimated": False}
    assert [item["name"] for item in (await admin.get("/segments")).json()] == ["Pro"]

    again = await admin.post("/segments", {"name": "pro", "expression": "name exists"})
    assert again.status_code == 409, "names are unique whatever their case"

    changed = await admin.patch(f"/segments/{segment['id']}", {"expression": 'email contains "example"'})
    assert changed.status_code == 200 and changed.json()["name"] == "Pro"
    assert (await admin.get(f"/segments/{segment['id']}/count")).json()["count"] == 2

    counted = await admin.post("/segments/count", {"expression": 'email = "FREE@example.com"'})
    assert counted.json() == {"count": 1, "estimated": False}

    assert (await admin.delete(f"/segments/{segment['id']}")).status_code == 204
    assert (await admin.get(f"/segments/{segment['id']}")).status_code == 404
    assert (await admin.get("/segments/999/count")).status_code == 404


@pytest.mark.parametrize(
    ("expression_text", "position"),
    [
        ('attributes.plan = "pro" and confirmd_at > 30d', 28),
        ('attributes.plan = "pro" and', 27),
        ("'; drop table subscribers; --", 0),
        ("name = 'x' or 1=1", 14),
    ],
)
async def test_a_bad_expression_is_a_422_naming_its_position(
    app: TestApp, admin: AdminClient, expression_text: str, position: int
) -> None:
    for response in (
        await admin.post("/segments", {"name": "Bad", "expression": expression_text}),
        await admin.post("/segments/count", {"expression": expression_text}),
    ):
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["position"] == position
        assert problem["detail"].startswith(f"expression: at column {position + 1}: ")
    assert await app.pool.fetchval("SELECT count(*) FROM segments") == 0


async def test_an_injection_is_matched_as_text(app: TestApp, admin: AdminClient) -> None:
    await app.add_subscriber("bobby@example.com", name="Robert'); DROP TABLE subscribers;--")
    counted = await admin.post(
        "/segments/count", {"expression": 'name = "Robert\'); DROP TABLE subscribers;--"'}
    )
    assert counted.json() == {"count": 1, "estimated": False}
    assert await app.pool.fetchval("SELECT count(*) FROM subscribers") == 1


async def _issue(admin: AdminClient, **fields: Any) -> dict[str, Any]:
    response = await admin.post("/issues", {"subject": "Pro news", "markdown": "Hello, pro.", **fields})
    assert response.status_code == 201, response.text
    issue: dict[str, Any] = response.json()
    return issue


async def test_an_issue_sent_to_a_segment_reaches_exactly_its_confirmed_people(
    app: TestApp, admin: AdminClient
) -> None:
    await app.add_list("weekly")
    await app.add_list("daily")
    # In weekly and pro: the audience. The others each miss one condition.
    await app.add_subscriber("ana@example.com", lists=["weekly", "daily"])
    await app.add_subscriber("bea@example.com", lists=["weekly"])
    await app.add_subscriber("cid@example.com", lists=["weekly"])  # free plan
    await app.add_subscriber("dan@example.com", lists=["daily"])  # not in weekly
    await app.add_subscriber("eve@example.com", lists=["weekly"], status="pending")
    await app.add_subscriber("fay@example.com", lists=["weekly"], person="blocklisted")
    await app.pool.execute(
        """UPDATE subscribers SET attributes = jsonb_build_object('plan', CASE WHEN email LIKE 'cid%'
           THEN 'free' ELSE 'pro' END)"""
    )
    segment = (await admin.post("/segments", {"name": "Pro", "expression": 'attributes.plan = "pro"'})).json()

    issue = await _issue(admin, lists=["weekly"], segment=segment["id"])
    assert issue["segment"] == segment["id"]
    assert (await admin.delete(f"/segments/{segment['id']}")).status_code == 409, "in use by a draft"
    sent = await admin.post(f"/issues/{issue['id']}/send", {})
    assert sent.status_code == 202, sent.text
    assert sent.json()["segment_expression"] == 'attributes.plan = "pro"'
    await app.dispatch_all_pending()

    ledger = await app.pool.fetch("SELECT recipient FROM deliveries WHERE issue_id = $1", issue["id"])
    assert sorted(row["recipient"] for row in ledger) == ["ana@example.com", "bea@example.com"]
    assert sorted(r for email in app.smtp.received for r in email.recipients) == [
        "ana@example.com",
        "bea@example.com",
    ]

    # Each email's unsubscribe removes the person from weekly, and from nothing else.
    [received] = app.smtp.to("ana@example.com")
    assert received.message["List-Id"].endswith("<weekly.localhost>")
    one_click = await app.client.post(
        received.message["List-Unsubscribe"][1:-1], data={"List-Unsubscribe": "One-Click"}
    )
    assert one_click.status_code == 200
    assert await app.subscription_status("ana@example.com", "weekly") == "unsubscribed"
    assert await app.subscription_status("ana@example.com", "daily") == "confirmed"

    # A sent issue keeps what it was sent with; the segment may now go.
    await admin.patch(f"/segments/{segment['id']}", {"expression": "name exists"})
    assert (await admin.get(f"/issues/{issue['id']}")).json()[
        "segment_expression"
    ] == 'attributes.plan = "pro"'
    assert (await admin.delete(f"/segments/{segment['id']}")).status_code == 204


async def test_an_issue_refuses_an_unknown_segment_and_can_drop_its_own(
    app: TestApp, admin: AdminClient
) -> None:
    response = await admin.post("/issues", {"subject": "x", "markdown": "x", "segment": 999})
    assert response.status_code == 422 and "segment 999 does not exist" in response.text
    segment = (
        await admin.post("/segments", {"name": "All", "expression": 'name exists or email contains "@"'})
    ).json()
    issue = await _issue(admin, segment=segment["id"])
    assert (await admin.patch(f"/issues/{issue['id']}", {"subject": "y", "markdown": "y"})).json()[
        "segment"
    ] == segment["id"], "a change that does not name the segment keeps it"
    dropped = await admin.patch(f"/issues/{issue['id']}", {"segment": None})
    assert dropped.json()["segment"] is None


async def test_beyond_fifty_thousand_the_count_is_an_estimate_that_says_so(
    app: TestApp, admin: AdminClient
) -> None:
    await add_confirmed(app.pool, 60_000)
    await app.pool.execute(
        "UPDATE subscribers "
        "SET attributes = jsonb_build_object('plan', CASE WHEN id % 3 = 0 THEN 'pro' ELSE 'free' END)"
    )
    await app.pool.execute("ANALYZE subscribers")

    exact = await admin.post("/segments/count", {"expression": 'attributes.plan = "free"'})
    assert exact.json() == {"count": 40_000, "estimated": False}
    everyone = (await admin.post("/segments/count", {"expression": 'email contains "@"'})).json()
    assert everyone["estimated"] is True
    assert 54_000 <= everyone["count"] <= 66_000, everyone
