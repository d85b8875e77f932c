"""DKIM: newsletters signed over the headers receivers check, verified as a receiver would."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import dkim
import pytest

from tests.harness import SMTPServer, add_confirmed, admin_client, spawn_app

pytestmark = pytest.mark.asyncio


@pytest.fixture
def dkim_key(tmp_path: Path) -> tuple[str, bytes]:
    """A private key (PEM) and the public key as a DNS TXT record would publish it."""
    private = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(private), "2048"], check=True, capture_output=True)
    public_der = subprocess.run(
        ["openssl", "rsa", "-in", str(private), "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public_der)
    return private.read_text(), record


async def test_newsletters_are_signed_and_verify(
    database_url: str, smtp: SMTPServer, dkim_key: tuple[str, bytes]
) -> None:
    pem, record = dkim_key
    async with spawn_app(
        database_url, smtp, dkim_selector="news2026", dkim_private_key=pem, sender="News <news@example.com>"
    ) as app:
        admin = await admin_client(app)
        [reader] = await add_confirmed(app.pool, 1)
        issue = (await admin.post("/issues", {"subject": "Signed", "markdown": "Hello"})).json()
        await admin.post(f"/issues/{issue['id']}/send")
        await app.dispatch_all_pending()
        await app.subscribe("new@example.com")
        await app.dispatch_all_pending()

    asked: list[bytes] = []

    def resolver(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return record if name == b"news2026._domainkey.example.com." else b""

    [newsletter] = smtp.to(reader)
    [confirmation] = smtp.to("new@example.com")
    for received in (newsletter, confirmation):
        assert dkim.verify(received.raw, dnsfunc=resolver), "the signature verifies with the published key"
    assert asked and set(asked) == {b"news2026._domainkey.example.com."}
    signature = newsletter.message["DKIM-Signature"]
    signed = {
        name.strip().lower() for name in re.search(r"h=([^;]+);", signature.replace("\n", ""))[1].split(":")
    }
    assert {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    } <= signed
    assert "d=example.com" in signature.replace(" ", "")

    tampered = newsletter.raw.replace(b"Subject: Signed", b"Subject: Changed")
    assert not dkim.verify(tampered, dnsfunc=resolver)


async def test_a_key_that_cannot_sign_is_refused_at_start(database_url: str, smtp: SMTPServer) -> None:
    with pytest.raises(ValueError, match="DKIM"):
        async with spawn_app(database_url, smtp, dkim_selector="s", dkim_private_key="not a key"):
            pass
