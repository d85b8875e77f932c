"""The sign-up form tells nobody who subscribes: a new, a pending, a confirmed, an unsubscribed, a suppressed
and a blocklisted address get the same status, headers and body, byte for byte, as JSON and as the HTML form.
(Timing is measured, not asserted: bench/enumeration.py, figures in docs/SECURITY.md.)"""

from __future__ import annotations

import httpx
import pytest

from tests.harness import TestApp, add_confirmed, admin_client

pytestmark = pytest.mark.asyncio

# Headers that differ between any two responses whatever the address: the request id, and the date (to the
# second) that the server adds.
PER_RESPONSE = {"x-request-id", "date"}


async def _addresses_of_every_kind(app: TestApp, channel: str) -> dict[str, str]:
    admin = await admin_client(app)
    kinds = {
        kind: f"{kind}-{channel}@example.com"
        for kind in ("new", "pending", "confirmed", "unsubscribed", "suppressed", "blocklisted")
    }
    assert (await app.subscribe(kinds["pending"])).status_code == 202
    for kind in ("confirmed", "unsubscribed", "suppressed", "blocklisted"):
        await add_confirmed(app.pool, 1, prefix=f"{kind}-{channel}-")
        await app.pool.execute(
            "UPDATE subscribers SET email = $1 WHERE email = $2",
            kinds[kind],
            f"{kind}-{channel}-0@example.com",
        )
    await app.leave(kinds["unsubscribed"])
    assert (
        await admin.post("/suppressions", {"email": kinds["suppressed"], "reason": "complaint"})
    ).status_code == 201
    person = await app.pool.fetchval("SELECT id FROM subscribers WHERE email = $1", kinds["blocklisted"])
    assert (await admin.patch(f"/subscribers/{person}", {"status": "blocklisted"})).status_code == 200
    await app.dispatch_all_pending()
    return kinds


def _visible(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((name, value) for name, value in response.headers.items() if name not in PER_RESPONSE)
    return response.status_code, headers, response.content


@pytest.mark.parametrize("channel", ["json", "form"])
async def test_every_kind_of_address_gets_the_same_answer_byte_for_byte(app: TestApp, channel: str) -> None:
    kinds = await _addresses_of_every_kind(app, channel)
    send = app.subscribe if channel == "json" else app.subscribe_form

    answers = {kind: _visible(await send(address, "Ada")) for kind, address in kinds.items()}

    reference = answers["new"]
    assert reference[0] == 202
    different = {kind for kind, answer in answers.items() if answer != reference}
    assert not different, {kind: answers[kind] for kind in different} | {"new": reference}


async def test_only_a_new_or_pending_address_is_mailed(app: TestApp) -> None:
    """What does differ is the inbox of the owner of the address, which the person asking cannot see."""
    kinds = await _addresses_of_every_kind(app, "json")
    before = {kind: len(app.smtp.to(address)) for kind, address in kinds.items()}

    for address in kinds.values():
        assert (await app.subscribe(address)).status_code == 202
    await app.dispatch_all_pending()

    mailed = {kind for kind, address in kinds.items() if len(app.smtp.to(address)) > before[kind]}
    # An unsubscribed person asking again gets a new confirmation: that is how one comes back.
    assert mailed == {"new", "pending", "unsubscribed"}
