"""The rules of the tokens in people's links, as properties: any subscription signs and verifies back, and no
other key, no alteration and no text of any shape verifies as anything else."""

from __future__ import annotations

import base64
import string

from hypothesis import given
from hypothesis import strategies as st

from newsletter.domain.tokens import Token, UnsubscribeToken

ids = st.integers(min_value=0, max_value=2**64 - 1)
keys = st.binary(min_size=16, max_size=64)
TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_"


@given(ids, ids, keys)
def test_a_signed_unsubscribe_token_verifies_back_to_its_subscription(
    subscriber_id: int, list_id: int, key: bytes
) -> None:
    token = UnsubscribeToken(subscriber_id, list_id)
    signed = token.sign(key)
    assert Token.parse(signed) is not None, "an unsubscribe token has the shape of every link token"
    assert UnsubscribeToken.verify(key, signed) == token


@given(ids, ids, keys, keys)
def test_a_token_signed_with_another_key_verifies_as_nothing(
    subscriber_id: int, list_id: int, key: bytes, other: bytes
) -> None:
    signed = UnsubscribeToken(subscriber_id, list_id).sign(key)
    if other != key:
        assert UnsubscribeToken.verify(other, signed) is None


@given(ids, ids, keys, st.data())
def test_an_altered_token_never_names_another_subscription(
    subscriber_id: int, list_id: int, key: bytes, data: st.DataObject
) -> None:
    token = UnsubscribeToken(subscriber_id, list_id)
    signed = token.sign(key)
    position = data.draw(st.integers(min_value=0, max_value=len(signed) - 1))
    replacement = data.draw(st.sampled_from(TOKEN_ALPHABET).filter(lambda char: char != signed[position]))
    altered = signed[:position] + replacement + signed[position + 1 :]
    # The last character carries two padding bits that base64 ignores: it may still name the same
    # subscription, never another one.
    assert UnsubscribeToken.verify(key, altered) in (None, token)
    if position < len(signed) - 1:
        assert UnsubscribeToken.verify(key, altered) is None


@given(ids, ids, keys, st.binary(min_size=1, max_size=16))
def test_a_forged_payload_with_any_mac_verifies_as_nothing(
    subscriber_id: int, list_id: int, key: bytes, mac: bytes
) -> None:
    """Someone who knows the format but not the key cannot name a subscription of their choice."""
    payload = subscriber_id.to_bytes(8, "big") + list_id.to_bytes(8, "big")
    forged = base64.urlsafe_b64encode(payload + mac.ljust(16, b"\0")).rstrip(b"=").decode()
    assert UnsubscribeToken.verify(key, forged) is None


@given(st.text(max_size=60), keys)
def test_any_text_verifies_as_nothing_and_never_fails(raw: str, key: bytes) -> None:
    assert UnsubscribeToken.verify(key, raw) is None


@given(
    st.text(alphabet=TOKEN_ALPHABET, min_size=43, max_size=43), st.sampled_from(["\n", "\r\n", " ", "=", "."])
)
def test_a_token_with_anything_appended_is_not_a_token(raw: str, suffix: str) -> None:
    assert Token.parse(raw) == Token(raw)
    assert Token.parse(raw + suffix) is None
    assert Token.parse(suffix + raw) is None
