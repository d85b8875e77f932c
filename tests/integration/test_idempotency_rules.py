"""The Idempotency-Key rules as a property: any sequence of POSTs, with keys and bodies repeated in any order,
answers exactly as a model of the rules says, and changes the database exactly as often as the model says."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import TestApp, admin_client

# A request: an Idempotency-Key (or none) and the list it creates. Few of each, so that repeats are common.
requests = st.lists(
    st.tuples(st.sampled_from([None, "k0", "k1", "k2"]), st.sampled_from(["a", "b", "c"])),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=requests)
async def test_any_sequence_of_keyed_requests_answers_as_the_rules_say(
    app: TestApp, sequence: list[tuple[str | None, str]]
) -> None:
    admin = await admin_client(app)
    run = uuid.uuid4().hex[:8]  # examples share the database: each gets keys and slugs of its own
    stored: dict[str, tuple[str, int, bytes]] = {}  # key -> (slug, status, body) of its first success
    created: set[str] = set()
    for key, slug in sequence:
        full_key = f"{run}-{key}" if key else None
        full_slug = f"{slug}-{run}"
        response = await admin.post("/lists", {"slug": full_slug, "name": slug.upper()}, key=full_key)
        if full_key in stored:
            first_slug, first_status, first_body = stored[full_key]
            if first_slug == full_slug:
                assert (response.status_code, response.content) == (first_status, first_body)
                assert response.headers["Idempotent-Replayed"] == "true"
            else:
                assert response.status_code == 422, "the same key with another body"
            continue
        assert "Idempotent-Replayed" not in response.headers
        if full_slug in created:
            assert response.status_code == 409, "the list exists: a conflict, and nothing stored for the key"
            continue
        assert response.status_code == 201, response.text
        created.add(full_slug)
        if full_key:
            stored[full_key] = (full_slug, response.status_code, response.content)
    rows = await app.pool.fetch("SELECT slug FROM lists WHERE slug LIKE '%-' || $1", run)
    assert {row["slug"] for row in rows} == created
    keys = await app.pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE key LIKE $1 || '-%'", run)
    assert keys == len(stored), "a key is kept only with the response of a request that succeeded"


async def test_a_key_is_per_token_so_another_token_s_same_key_is_a_new_request(app: TestApp) -> None:
    """Two integrators who happen to pick the same key (a counter, a date) each get their own requests run;
    neither is answered with, nor refused for, what the other did."""
    alice, bob = await admin_client(app), await admin_client(app)

    # The same key and the same body: Bob's request runs, and finds the list Alice's created.
    created = await alice.post("/lists", {"slug": "weekly", "name": "Weekly"}, key="1")
    again = await bob.post("/lists", {"slug": "weekly", "name": "Weekly"}, key="1")
    assert created.status_code == 201, created.text
    assert again.status_code == 409, again.text
    assert "Idempotent-Replayed" not in again.headers

    # The same key with other bodies: two requests of their own, both run.
    daily = await alice.post("/lists", {"slug": "daily", "name": "Daily"}, key="2")
    monthly = await bob.post("/lists", {"slug": "monthly", "name": "Monthly"}, key="2")
    assert (daily.status_code, monthly.status_code) == (201, 201), monthly.text
    assert "Idempotent-Replayed" not in monthly.headers
    slugs = await app.pool.fetch("SELECT slug FROM lists WHERE slug IN ('daily', 'monthly')")
    assert {row["slug"] for row in slugs} == {"daily", "monthly"}

    # Each token's repeat replays its own response.
    for client, body, first in (
        (alice, {"slug": "daily", "name": "Daily"}, daily),
        (bob, {"slug": "monthly", "name": "Monthly"}, monthly),
    ):
        repeat = await client.post("/lists", body, key="2")
        assert (repeat.status_code, repeat.content) == (201, first.content)
        assert repeat.headers["Idempotent-Replayed"] == "true"
