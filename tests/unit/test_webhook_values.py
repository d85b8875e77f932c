"""Webhook values: the URL parser, the rule on addresses, the secret and the signature (property-based)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from newsletter.domain.subscriber import InvalidInput
from newsletter.domain.webhooks import (
    SECRET_PREFIX,
    Signer,
    WebhookUrl,
    message_id,
    new_secret,
    payload,
    refused_address,
)

ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)


@given(ipv4)
def test_an_ipv4_address_inside_ipv6_is_judged_as_itself(address: ipaddress.IPv4Address) -> None:
    verdict = refused_address(address) is None
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(address))
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80) | 1)
    for wrapped in (mapped, nat64, sixtofour):
        assert (refused_address(wrapped) is None) == verdict, wrapped


@given(st.one_of(ipv4, ipv6))
def test_only_global_addresses_are_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    reason = refused_address(address)
    if reason is None:
        assert address.is_global and not address.is_multicast
    else:
        assert str(address) in reason


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "not a public"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a00:1", "private"),
    ],
)
def test_the_addresses_of_the_inside_are_refused(address: str, kind: str) -> None:
    reason = refused_address(ipaddress.ip_address(address))
    assert reason is not None and kind in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "93.184.215.14"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address)) is None


@given(st.text(max_size=300))
def test_any_text_is_a_webhook_url_or_a_clear_refusal(raw: str) -> None:
    try:
        url = WebhookUrl.parse(raw)
    except InvalidInput as error:
        assert str(error).startswith("url: ")
        return
    assert url.value.startswith(("http://", "https://"))
    assert "@" not in url.value.split("/")[2]
    assert 0 < url.port < 65536 and url.host


@given(
    st.sampled_from(["http", "https"]),
    st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True),
    st.from_regex(r"[a-z0-9:]{0,10}", fullmatch=True),
)
def test_credentials_in_a_url_are_refused(scheme: str, user: str, password: str) -> None:
    with pytest.raises(InvalidInput, match="credentials"):
        WebhookUrl.parse(f"{scheme}://{user}{':' + password if password else ''}@example.com/hooks")


def test_ports_default_by_scheme_and_literals_are_told_apart() -> None:
    assert WebhookUrl.parse("https://example.com/h").port == 443
    assert WebhookUrl.parse("http://example.com:8080/h").port == 8080
    assert WebhookUrl.parse("http://example.com/h").literal_address is None
    assert WebhookUrl.parse("http://[::1]:9/h").literal_address == ipaddress.ip_address("::1")


def test_a_secret_is_prefixed_random_and_long_enough() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith(SECRET_PREFIX)
        assert len(base64.b64decode(secret.removeprefix(SECRET_PREFIX))) == 24


@given(st.binary(max_size=2000), st.integers(1, 2**62), st.integers(0, 2**33))
def test_the_signature_is_the_specifications(body: bytes, event_id: int, seconds: int) -> None:
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    sent_at = datetime.fromtimestamp(seconds, UTC)
    headers = Signer(secret).headers(message_id(event_id), sent_at, body)

    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"evt_{event_id}.{seconds}.".encode() + body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers == {
        "webhook-id": f"evt_{event_id}",
        "webhook-timestamp": str(seconds),
        "webhook-signature": f"v1,{digest}",
    }


def test_a_fresh_request_verifies_with_the_standard_library() -> None:
    secret = new_secret()
    body = payload(7, "subscription.confirmed", datetime.now(UTC), {"email": "ö@example.com"})
    headers = Signer(secret).headers(message_id(7), datetime.now(UTC), body)
    assert Webhook(secret).verify(body, headers)["data"] == {"email": "ö@example.com"}
    assert json.loads(body)["id"] == 7
