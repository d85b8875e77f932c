"""Bot protection on sign-ups (SPEC section 13): with NEWSLETTER_SIGNUP_CHALLENGE=pow every sign-up carries a
solved proof-of-work challenge (the ALTCHA protocol), accepted once; with NEWSLETTER_SIGNUP_CHECK_MX=true an
address whose domain receives no mail is refused, as a DNS server in this process says (not the internet)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from altcha.v1 import SHA256, ChallengeOptions, create_challenge

from newsletter.services.access.challenges import challenge_key
from tests.dns_server import Zone, running_dns, silent_dns
from tests.harness import SMTPServer, TestApp, spawn_app

pytestmark = pytest.mark.asyncio


def solve(challenge: dict[str, Any]) -> str:
    """What the form's script does, with hashlib: the payload of the number that solves the challenge."""
    for number in range(challenge["maxnumber"] + 1):
        if hashlib.sha256(f"{challenge['salt']}{number}".encode()).hexdigest() == challenge["challenge"]:
            fields = ("algorithm", "challenge", "salt", "signature")
            payload = {"number": number, **{key: challenge[key] for key in fields}}
            return base64.b64encode(json.dumps(payload).encode()).decode()
    raise AssertionError("no number solves the challenge")


def edited(payload: str, **changes: Any) -> str:
    document = json.loads(base64.b64decode(payload))
    return base64.b64encode(json.dumps({**document, **changes}).encode()).decode()


async def solved(app: TestApp) -> str:
    response = await app.client.get("/subscriptions/challenge")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    return solve(response.json())


@pytest.fixture
async def pow_app(database_url: str, smtp: SMTPServer) -> AsyncIterator[TestApp]:
    async with spawn_app(database_url, smtp, signup_challenge="pow") as test_app:
        yield test_app


async def nothing_written(app: TestApp, address: str) -> None:
    assert await app.tables_holding(address) == []
    await app.dispatch_all_pending()
    assert app.smtp.to(address) == []


async def test_a_solved_challenge_signs_up_and_the_confirmation_is_sent(pow_app: TestApp) -> None:
    response = await pow_app.subscribe("ada@example.com", "Ada", altcha=await solved(pow_app))

    assert response.status_code == 202
    assert await pow_app.subscription_status("ada@example.com") == "pending"
    assert await pow_app.dispatch_all_pending() == 1
    assert len(pow_app.confirmation_links("ada@example.com")) == 1
    assert await pow_app.metric("newsletter_signup_challenges_total", outcome="verified") >= 1


async def test_the_form_with_a_solved_challenge_signs_up(pow_app: TestApp) -> None:
    form = await pow_app.client.get("/")
    response = await pow_app.subscribe_form("grace@example.com", "Grace", altcha=await solved(pow_app))

    assert 'data-challenge="/subscriptions/challenge"' in form.text
    assert '<script src="/static/signup-challenge.js"' in form.text
    assert response.status_code == 202
    assert "Check your inbox" in response.text
    assert await pow_app.subscription_status("grace@example.com") == "pending"


async def test_a_bot_without_a_solution_gets_422_and_nothing_is_written(pow_app: TestApp) -> None:
    as_json = await pow_app.subscribe("bot@example.com")
    as_form = await pow_app.subscribe_form("bot@example.com")
    empty = await pow_app.subscribe("bot@example.com", altcha="")

    for response in (as_json, empty):
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        [error] = response.json()["errors"]
        assert error["field"] == "altcha"
        assert "JavaScript" in error["message"]
    assert as_form.status_code == 422
    assert as_form.headers["content-type"].startswith("text/html")
    assert "Please let the form check your browser" in as_form.text
    assert 'value="bot@example.com"' in as_form.text
    await nothing_written(pow_app, "bot@example.com")


async def test_a_replayed_solution_gets_422_and_only_the_first_sign_up_is_written(pow_app: TestApp) -> None:
    payload = await solved(pow_app)

    first = await pow_app.subscribe("first@example.com", altcha=payload)
    again = await pow_app.subscribe("second@example.com", altcha=payload)
    again_as_form = await pow_app.subscribe_form("third@example.com", altcha=payload)

    assert first.status_code == 202
    assert again.status_code == 422
    assert again.json()["errors"] == [
        {"field": "altcha", "message": "This browser check was already used; please send the form again."}
    ]
    assert again_as_form.status_code == 422
    assert "This browser check was already used" in again_as_form.text
    await nothing_written(pow_app, "second@example.com")
    await nothing_written(pow_app, "third@example.com")
    assert await pow_app.metric("newsletter_signup_challenges_total", outcome="refused_replayed") >= 2


async def test_an_expired_solution_gets_422(pow_app: TestApp) -> None:
    key = challenge_key(pow_app.settings.resolved_secret_key().encode())
    old = create_challenge(
        ChallengeOptions(
            algorithm=SHA256, max_number=1000, hmac_key=key, expires=datetime.now(UTC) - timedelta(seconds=1)
        )
    )
    payload = solve({**old.to_dict(), "maxnumber": old.max_number})

    response = await pow_app.subscribe("late@example.com", altcha=payload)

    assert response.status_code == 422
    assert "expired" in response.json()["detail"]
    await nothing_written(pow_app, "late@example.com")


async def test_a_challenge_signed_with_another_key_or_tampered_gets_422(pow_app: TestApp) -> None:
    foreign = create_challenge(
        ChallengeOptions(
            algorithm=SHA256,
            max_number=1000,
            hmac_key=b"not the service's key",
            expires=datetime.now(UTC) + timedelta(minutes=5),
        )
    )
    genuine = await solved(pow_app)
    number = json.loads(base64.b64decode(genuine))["number"]
    forgeries = {
        "foreign key": solve({**foreign.to_dict(), "maxnumber": foreign.max_number}),
        "signature": edited(genuine, signature="0" * 64),
        "wrong number": edited(genuine, number=number + 1),
        "later expiry": edited(genuine, salt="00?expires=9999999999&"),
        "other algorithm": edited(genuine, algorithm="SHA-1"),
    }

    for what, payload in forgeries.items():
        response = await pow_app.subscribe(f"forged-{what.replace(' ', '-')}@example.com", altcha=payload)
        assert response.status_code == 422, what
        assert response.json()["errors"][0]["field"] == "altcha", what
    for what in forgeries:
        await nothing_written(pow_app, f"forged-{what.replace(' ', '-')}@example.com")
    # The genuine solution was not spent by its forgeries.
    assert (await pow_app.subscribe("genuine@example.com", altcha=genuine)).status_code == 202


@pytest.mark.parametrize(
    "garbage",
    [
        "not base64!",
        "====",
        base64.b64encode(b"\xff\xfe").decode(),
        base64.b64encode(b"[1, 2]").decode(),
        base64.b64encode(b'{"number": "1"}').decode(),
        base64.b64encode(b"[" * 5000).decode()[:1990],
        "A" * 100_000,
    ],
)
async def test_garbage_solutions_are_422_never_500(pow_app: TestApp, garbage: str) -> None:
    as_json = await pow_app.subscribe("garbage@example.com", altcha=garbage)
    as_form = await pow_app.subscribe_form("garbage@example.com", altcha=garbage)

    assert as_json.status_code in (413, 422)
    assert as_form.status_code in (413, 422)
    await nothing_written(pow_app, "garbage@example.com")


async def test_the_challenge_endpoint_is_in_the_openapi_document(pow_app: TestApp) -> None:
    document = (await pow_app.client.get("/openapi.json")).json()

    assert "get" in document["paths"]["/subscriptions/challenge"]
    body = document["paths"]["/subscriptions"]["post"]["requestBody"]["content"]["application/json"]
    assert "altcha" in body["schema"]["properties"]


async def test_without_the_setting_no_solution_is_asked_for(app: TestApp) -> None:
    form = await app.client.get("/")

    assert "signup-challenge.js" not in form.text
    assert (await app.subscribe("plain@example.com")).status_code == 202


# The MX check.

ZONE = [
    "has-mx.com. 60 IN MX 10 mail.has-mx.com.",
    "mail.has-mx.com. 60 IN A 192.0.2.25",
    "only-a.net. 60 IN A 192.0.2.80",
    "only-aaaa.org. 60 IN AAAA 2001:db8::80",
    'no-records.com. 60 IN TXT "v=spf1 -all"',
    "null-mx.com. 60 IN MX 0 .",
]


@pytest.fixture
def zone() -> Zone:
    return Zone(ZONE, failing={"broken-dns.com."})


@pytest.fixture
def dns(zone: Zone) -> Iterator[str]:
    with running_dns(zone) as address:
        yield address


@pytest.fixture
async def mx_app(database_url: str, smtp: SMTPServer, dns: str) -> AsyncIterator[TestApp]:
    async with spawn_app(database_url, smtp, signup_check_mx=True, dns_resolver=dns) as test_app:
        yield test_app


@pytest.mark.parametrize("address", ["ada@has-mx.com", "bo@only-a.net", "cy@only-aaaa.org"])
async def test_an_address_whose_domain_has_a_mail_host_signs_up(
    mx_app: TestApp, zone: Zone, address: str
) -> None:
    response = await mx_app.subscribe(address)

    assert response.status_code == 202
    assert await mx_app.subscription_status(address) == "pending"
    assert (address.partition("@")[2], "MX") in zone.asked


@pytest.mark.parametrize("address", ["ada@nowhere-at-all.com", "bo@no-records.com", "cy@null-mx.com"])
async def test_an_address_whose_domain_receives_no_mail_is_refused(mx_app: TestApp, address: str) -> None:
    as_json = await mx_app.subscribe(address)
    as_form = await mx_app.subscribe_form(address)

    assert as_json.status_code == 422
    assert as_json.headers["content-type"] == "application/problem+json"
    assert as_json.json()["errors"] == [
        {
            "field": "email",
            "message": "This address's domain does not receive email; please check the part after the @.",
        }
    ]
    assert as_form.status_code == 422
    assert "does not receive email" in as_form.text
    await nothing_written(mx_app, address)
    assert await mx_app.metric("newsletter_signup_mail_domain_checks_total", outcome="refused") >= 2


async def test_a_failing_dns_server_does_not_refuse_a_sign_up(mx_app: TestApp) -> None:
    response = await mx_app.subscribe("ada@broken-dns.com")

    assert response.status_code == 202
    assert await mx_app.subscription_status("ada@broken-dns.com") == "pending"
    assert await mx_app.metric("newsletter_signup_mail_domain_checks_total", outcome="unknown") >= 1


async def test_a_dns_server_that_never_answers_does_not_refuse_a_sign_up(
    database_url: str, smtp: SMTPServer
) -> None:
    with silent_dns() as silent:
        async with spawn_app(
            database_url, smtp, signup_check_mx=True, dns_resolver=silent, dns_timeout_seconds=0.3
        ) as app:
            response = await app.subscribe("ada@has-mx.com")

            assert response.status_code == 202
            assert await app.subscription_status("ada@has-mx.com") == "pending"


async def test_the_challenge_is_checked_before_dns_is_asked(
    database_url: str, smtp: SMTPServer, dns: str, zone: Zone
) -> None:
    async with spawn_app(
        database_url, smtp, signup_challenge="pow", signup_check_mx=True, dns_resolver=dns
    ) as app:
        refused = await app.subscribe("bot@has-mx.com")
        accepted = await app.subscribe("ada@has-mx.com", altcha=await solved(app))

    assert refused.status_code == 422
    assert accepted.status_code == 202
    assert zone.asked.count(("has-mx.com", "MX")) == 1
