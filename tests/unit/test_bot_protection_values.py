"""The values at the edge of bot protection: the proof-of-work payload a sign-up carries (whatever arrives, it
is parsed or refused with a message, never an exception of another kind) and the DNS resolver setting."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.config import DnsServer, Settings
from newsletter.domain.challenge import BROKEN, MISSING, ChallengeSolution
from newsletter.domain.subscriber import InvalidInput

HEX = "ab" * 32
GOOD: dict[str, Any] = {
    "algorithm": "SHA-256",
    "challenge": HEX,
    "number": 42,
    "salt": "0a1b2c?expires=1767225600&",
    "signature": HEX,
}


def encoded(document: Any) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def test_a_well_formed_payload_is_parsed_with_its_expiry() -> None:
    solution = ChallengeSolution.parse(encoded(GOOD))

    assert solution.number == 42
    assert solution.salt == GOOD["salt"]
    assert solution.expires_at == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "change",
    [
        {"algorithm": "SHA-1"},
        {"challenge": "AB" * 32},
        {"challenge": HEX[:-1]},
        {"signature": 7},
        {"number": -1},
        {"number": True},
        {"number": 1.5},
        {"number": 10**12},
        {"salt": ""},
        {"salt": "0a1b2c"},
        {"salt": "0a1b2c?expires=soon&"},
        {"salt": "0a1b2c?expires=1&expires=9999999999&"},
        {"salt": "x" * 300 + "?expires=1767225600&"},
    ],
)
def test_a_payload_with_a_wrong_field_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match=re.escape(BROKEN)):
        ChallengeSolution.parse(encoded({**GOOD, **change}))


def test_a_missing_payload_asks_for_javascript() -> None:
    with pytest.raises(InvalidInput, match=re.escape(MISSING)):
        ChallengeSolution.parse("  ")


def _outcome(raw: str) -> None:
    """Parse `raw`: a solution or InvalidInput, and nothing else."""
    try:
        ChallengeSolution.parse(raw)
    except InvalidInput as error:
        assert str(error) in (BROKEN, MISSING)


@given(st.text())
def test_any_text_is_parsed_or_refused(raw: str) -> None:
    _outcome(raw)


@given(st.binary())
def test_any_bytes_in_base64_are_parsed_or_refused(raw: bytes) -> None:
    _outcome(base64.b64encode(raw).decode())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(st.fixed_dictionaries({}, optional={key: JSON for key in GOOD}) | JSON)
def test_any_json_in_base64_is_parsed_or_refused(document: Any) -> None:
    _outcome(encoded(document))


@given(st.dictionaries(st.sampled_from(sorted(GOOD)), JSON))
def test_a_good_payload_with_any_fields_changed_is_parsed_or_refused(changes: dict[str, Any]) -> None:
    _outcome(encoded({**GOOD, **changes}))


def test_the_solution_found_with_hashlib_is_the_protocols() -> None:
    # The protocol's challenge is the SHA-256 (hex) of the salt followed by the number in decimal.
    salt = GOOD["salt"]
    challenge = hashlib.sha256(f"{salt}42".encode()).hexdigest()
    assert ChallengeSolution.parse(encoded({**GOOD, "challenge": challenge})).challenge == challenge


@pytest.mark.parametrize(
    ("raw", "host", "port"),
    [("127.0.0.1", "127.0.0.1", 53), ("127.0.0.1:5353", "127.0.0.1", 5353), ("[::1]:5353", "::1", 5353)],
)
def test_the_resolver_setting_names_an_address_and_a_port(raw: str, host: str, port: int) -> None:
    assert DnsServer.parse(raw) == DnsServer(host, port)
    assert Settings(dns_resolver=raw).dns_resolver == raw


@pytest.mark.parametrize("raw", ["dns.example.com", "127.0.0.1:0", "127.0.0.1:dns", "1.2.3.4:70000"])
def test_a_resolver_that_is_not_an_address_stops_the_start(raw: str) -> None:
    with pytest.raises(ValueError, match="dns_resolver"):
        Settings(dns_resolver=raw)
