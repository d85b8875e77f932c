"""The secrets in links: confirmation tokens are random and kept only as hashes, unsubscribe tokens are MACs
bound to one key and one subscription, and one network address cannot keep guessing either kind."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from newsletter.domain.tokens import UnsubscribeToken
from tests.harness import SMTPServer, TestApp, add_confirmed, admin_client, spawn_app
from tests.security.helpers import database_as_text, unsubscribe_url

pytestmark = pytest.mark.asyncio

GUESS_LIMIT = 5
WRONG_TOKEN = "A" * 43  # shaped like a token, names nothing


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=")


async def _confirmation_token(app: TestApp, address: str) -> str:
    assert (await app.subscribe(address)).status_code == 202
    await app.dispatch_all_pending()
    return app.token_of(app.confirmation_links(address)[-1])


async def test_confirmation_tokens_are_256_random_bits_and_the_database_holds_only_their_hash(
    app: TestApp,
) -> None:
    first = await _confirmation_token(app, "ada@example.com")
    second = await _confirmation_token(app, "ada@example.com")  # a fresh email for a pending address
    other = await _confirmation_token(app, "bob@example.com")

    tokens = {first, second, other}
    assert len(tokens) == 3
    assert all(len(_raw(token)) == 32 for token in tokens)
    everything = await database_as_text(app)
    for token in tokens:
        assert token not in everything
        assert _raw(token).hex() not in everything
        assert hashlib.sha256(token.encode()).hexdigest() in everything  # what is kept instead


async def test_api_tokens_are_256_random_bits_kept_only_as_hashes(app: TestApp) -> None:
    admin = await admin_client(app)
    token = admin.headers["Authorization"].removeprefix("Bearer ")
    other = (await admin_client(app)).headers["Authorization"].removeprefix("Bearer ")

    prefix = token[: len(token) - 43]
    assert token != other and len(_raw(token.removeprefix(prefix))) == 32
    everything = await database_as_text(app)
    assert token not in everything and token.removeprefix(prefix) not in everything
    assert hashlib.sha256(token.encode()).hexdigest() in everything
    assert (
        await app.client.get("/api/v1/lists", headers={"Authorization": f"Bearer {token}x"})
    ).status_code == 401


async def test_an_unsubscribe_token_works_only_with_the_key_and_the_subscription_it_was_made_for(
    app: TestApp,
) -> None:
    ada, bob = await add_confirmed(app.pool, 2)
    url = await unsubscribe_url(app, await admin_client(app), ada)
    token = urlsplit(url).path.rsplit("/", 1)[-1]
    key = app.settings.resolved_secret_key().encode()
    genuine = UnsubscribeToken.verify(key, token)
    assert genuine is not None
    bob_id = await app.pool.fetchval("SELECT id FROM subscribers WHERE email = $1", bob)

    assert UnsubscribeToken.verify(b"another key entirely", token) is None
    raw = _raw(token)
    # Bob's id under Ada's MAC, and Ada's id on another list under the same MAC.
    for payload in (
        bob_id.to_bytes(8, "big") + raw[8:16],
        raw[:8] + (genuine.list_id + 1).to_bytes(8, "big"),
    ):
        forged = base64.urlsafe_b64encode(payload + raw[16:]).rstrip(b"=").decode()
        assert UnsubscribeToken.verify(key, forged) is None
        assert (await app.client.post(f"/unsubscribe/{forged}")).status_code == 404
    made_elsewhere = UnsubscribeToken(bob_id, genuine.list_id).sign(b"a key that is not the server's")
    assert (await app.client.post(f"/unsubscribe/{made_elsewhere}")).status_code == 404

    assert await app.subscription_status(ada) == "confirmed"
    assert await app.subscription_status(bob) == "confirmed"


@pytest.fixture
async def strict_app(database_url: str, smtp: SMTPServer) -> AsyncIterator[TestApp]:
    async with spawn_app(database_url, smtp, token_guess_limit=GUESS_LIMIT) as test_app:
        yield test_app


async def _guess_confirmation(app: TestApp, token: str) -> int:
    return (await app.client.post("/subscriptions/confirm", data={"token": token})).status_code


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_guessing_confirmation_tokens_ends_in_429_even_for_the_right_one(
    strict_app: TestApp, method: str
) -> None:
    app = strict_app
    token = await _confirmation_token(app, "ada@example.com")

    async def attempt(value: str) -> int:
        if method == "GET":
            return (await app.client.get("/subscriptions/confirm", params={"token": value})).status_code
        return await _guess_confirmation(app, value)

    answers = [await attempt(f"{WRONG_TOKEN[:-2]}{n:02d}") for n in range(GUESS_LIMIT)]
    assert answers == [404] * GUESS_LIMIT
    refused = await app.client.post("/subscriptions/confirm", data={"token": token})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    # A right guess looks like a wrong one once the address is refused, and changes nothing.
    assert await attempt(token) == 429
    assert await app.subscription_status("ada@example.com") == "pending"


async def test_guessing_unsubscribe_tokens_ends_in_429_even_for_the_right_one(strict_app: TestApp) -> None:
    app = strict_app
    [reader] = await add_confirmed(app.pool, 1)
    url = await unsubscribe_url(app, await admin_client(app), reader)
    token = urlsplit(url).path.rsplit("/", 1)[-1]

    answers = []
    for n in range(GUESS_LIMIT):
        method = app.client.get if n % 2 else app.client.post
        answers.append((await method(f"/unsubscribe/{WRONG_TOKEN[:-2]}{n:02d}")).status_code)
    assert answers == [404] * GUESS_LIMIT
    assert (await app.client.get(f"/unsubscribe/{token}")).status_code == 429
    one_click = await app.client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 429
    assert int(one_click.headers["retry-after"]) > 0
    assert await app.subscription_status(reader) == "confirmed"


async def test_right_tokens_are_never_counted_as_guesses(strict_app: TestApp) -> None:
    """A mailbox provider sends every one-click unsubscribe of its users from a few addresses."""
    app = strict_app
    readers = await add_confirmed(app.pool, GUESS_LIMIT + 3)
    admin = await admin_client(app)
    created = await admin.post("/issues", {"subject": "News", "markdown": "Hello"})
    await admin.post(f"/issues/{created.json()['id']}/send")
    await app.dispatch_all_pending()

    for reader in readers:
        url = str(app.smtp.to(reader)[-1].message["List-Unsubscribe"])[1:-1]
        assert (await app.client.get(url)).status_code == 200
        assert (await app.client.post(url, data={"List-Unsubscribe": "One-Click"})).status_code == 200
    for n in range(GUESS_LIMIT + 3):
        address = f"new{n}@example.com"
        token = await _confirmation_token(app, address)
        assert await _guess_confirmation(app, token) == 200
        assert await _guess_confirmation(app, token) == 200  # repeating is harmless, and not a guess

    assert await _guess_confirmation(app, WRONG_TOKEN) == 404


async def test_the_default_limit_leaves_room_for_a_few_mistyped_links(app: TestApp) -> None:
    assert app.settings.token_guess_limit >= 10
    answers = [await _guess_confirmation(app, f"{WRONG_TOKEN[:-2]}{n:02d}") for n in range(10)]
    assert answers == [404] * 10
