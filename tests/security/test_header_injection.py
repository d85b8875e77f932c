"""No value a person or an integrator supplies can add a header or break the MIME structure of an email:
line breaks and other control characters are refused with 422, and what is accepted is encoded."""

from __future__ import annotations

from collections import Counter
from email.headerregistry import Address

import pytest
from pydantic import ValidationError

from newsletter.config import Settings
from tests.harness import AdminClient, ReceivedEmail, TestApp, add_confirmed, admin_client

# Everything Python's str.splitlines() and the email package take for the end of a line, and NUL.
LINE_BREAKS = ["\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00"]
INJECTED = "Bcc: victim@example.com"
NEWSLETTER_HEADERS = Counter([
    "From", "Subject", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post", "To", "Date", "Message-ID",
    "MIME-Version", "Content-Type",
])  # fmt: skip
CONFIRMATION_HEADERS = Counter(
    ["From", "Subject", "To", "Date", "Message-ID", "MIME-Version", "Content-Type"]
)


@pytest.fixture
async def admin(app: TestApp) -> AdminClient:
    return await admin_client(app)


def _assert_well_formed(received: ReceivedEmail, expected: Counter[str]) -> None:
    """Exactly the expected headers, each once, and a multipart/alternative of one text and one HTML part."""
    message = received.message
    assert Counter(message.keys()) == expected, message.keys()
    head = received.raw.split(b"\r\n\r\n", 1)[0]
    assert not head.lower().startswith(b"bcc:") and b"\nbcc:" not in head.lower()
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert not message.defects and all(not part.defects for part in message.iter_parts())


async def _newsletter(app: TestApp, admin: AdminClient, reader: str, **content: object) -> ReceivedEmail:
    created = await admin.post("/issues", content)
    assert created.status_code == 201, created.text
    assert (await admin.post(f"/issues/{created.json()['id']}/send")).status_code == 202
    await app.dispatch_all_pending()
    [received] = app.smtp.to(reader)
    return received


@pytest.mark.parametrize("line_break", LINE_BREAKS)
async def test_a_line_break_in_a_sign_up_field_is_refused(app: TestApp, line_break: str) -> None:
    email = await app.subscribe(f"ada@example.com{line_break}{INJECTED}")
    form_email = await app.subscribe_form(f"ada@example.com{line_break}{INJECTED}")
    name = await app.subscribe("bob@example.com", f"Bob{line_break}{INJECTED}")

    assert (email.status_code, form_email.status_code, name.status_code) == (422, 422, 422)
    await app.dispatch_all_pending()
    assert app.smtp.received == []
    assert await app.subscription_status("bob@example.com") is None


async def test_a_name_that_spells_a_header_is_kept_out_of_the_email(app: TestApp) -> None:
    assert (await app.subscribe("bob@example.com", f"Bob {INJECTED}")).status_code == 202
    await app.dispatch_all_pending()

    [received] = app.smtp.received
    assert received.recipients == ["bob@example.com"]
    _assert_well_formed(received, CONFIRMATION_HEADERS)
    assert b"Bob" not in received.raw and b"victim" not in received.raw


@pytest.mark.parametrize("line_break", LINE_BREAKS)
async def test_a_line_break_in_an_issue_subject_is_refused(
    app: TestApp, admin: AdminClient, line_break: str
) -> None:
    subject = f"News{line_break}{INJECTED}"

    created = await admin.post("/issues", {"subject": subject, "markdown": "Hello"})
    assert created.status_code == 422, created.text
    draft = await admin.post("/issues", {"subject": "News", "markdown": "Hello"})
    patched = await admin.patch(f"/issues/{draft.json()['id']}", {"subject": subject, "markdown": "Hello"})
    assert patched.status_code == 422, patched.text

    [issue] = (await admin.get("/issues")).json()["items"]
    assert issue["subject"] == "News"


async def test_an_issue_subject_that_spells_a_header_stays_in_the_subject(
    app: TestApp, admin: AdminClient
) -> None:
    [reader] = await add_confirmed(app.pool, 1)

    received = await _newsletter(app, admin, reader, subject=f"News {INJECTED}", markdown="Hello")

    assert received.recipients == [reader]
    _assert_well_formed(received, NEWSLETTER_HEADERS)
    assert received.message["Subject"] == f"News {INJECTED}"


@pytest.mark.parametrize("line_break", LINE_BREAKS)
async def test_a_line_break_in_a_list_name_is_refused(admin: AdminClient, line_break: str) -> None:
    created = await admin.post("/lists", {"slug": "weekly", "name": f"Weekly{line_break}{INJECTED}"})
    assert created.status_code == 422, created.text
    await admin.post("/lists", {"slug": "weekly", "name": "Weekly"})
    [weekly] = [item for item in (await admin.get("/lists")).json() if item["slug"] == "weekly"]
    patched = await admin.patch(f"/lists/{weekly['id']}", {"name": f"Weekly{line_break}{INJECTED}"})
    assert patched.status_code == 422, patched.text


@pytest.mark.parametrize("line_break", ["\r\n", "\n", "\r"])
async def test_a_line_break_in_an_address_given_to_the_api_is_refused(
    app: TestApp, admin: AdminClient, line_break: str
) -> None:
    address = f"ada@example.com{line_break}{INJECTED}"
    created = await admin.post("/issues", {"subject": "News", "markdown": "Hello"})

    assert (await admin.post("/subscribers", {"email": address})).status_code == 422
    assert (await admin.post("/suppressions", {"email": address})).status_code == 422
    assert (
        await admin.post(f"/issues/{created.json()['id']}/test", {"addresses": [address]})
    ).status_code == 422
    await app.dispatch_all_pending()
    assert app.smtp.received == []


@pytest.mark.parametrize(
    "name",
    [
        'Weekly "quoted" news',
        "Weekly <evil@attacker.example>",
        "Caf\u00e9 \u00e0 la cr\u00e8me \U0001f600",
        "=?utf-8?q?Encoded=0D=0ABcc:_victim@example.com?=",
        "Comma, colon: semicolon; backslash \\ (comment)",
        "x" * 200,
    ],
)
async def test_a_hostile_list_name_is_encoded_in_list_id(app: TestApp, admin: AdminClient, name: str) -> None:
    created = await admin.post(
        "/lists", {"slug": "weekly", "name": name, "optin": "single", "visibility": "public"}
    )
    assert created.status_code == 201, created.text
    assert (await app.subscribe("reader@example.com", list="weekly")).status_code == 202

    received = await _newsletter(
        app, admin, "reader@example.com", subject="News", markdown="Hi", lists=["weekly"]
    )

    _assert_well_formed(received, NEWSLETTER_HEADERS)
    head = received.raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii(), "a header carries raw 8-bit text instead of an encoded word"
    # Read back as a mail client shows it: the name itself (decoded), or quoted, and then the one list id.
    quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert str(received.message["List-Id"]) in (f"{name} <weekly.localhost>", f"{quoted} <weekly.localhost>")


async def test_the_body_cannot_end_the_smtp_data_or_break_out_of_its_mime_part(
    app: TestApp, admin: AdminClient
) -> None:
    [reader] = await add_confirmed(app.pool, 1)
    hostile = (
        "Before\r\n.\r\nMAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
        "\r\n--=_nl_\r\nContent-Type: text/html\r\n\r\n<b>smuggled</b>\r\n\r\n\n.\n\r.\rAfter"
    )

    received = await _newsletter(app, admin, reader, subject="News", html=hostile, text=hostile)

    assert len(app.smtp.received) == 1
    assert app.smtp.received[0].recipients == [reader]
    _assert_well_formed(received, NEWSLETTER_HEADERS)
    text = received.body("plain")
    assert "MAIL FROM:<evil@attacker.example>" in text and "After" in text


@pytest.mark.parametrize("line_break", LINE_BREAKS)
def test_a_line_break_in_the_configured_sender_is_refused_at_start(line_break: str) -> None:
    with pytest.raises(ValidationError):
        Settings(sender=f"News{line_break}{INJECTED} <news@example.com>")


async def test_a_sender_name_with_specials_and_accents_is_encoded(database_url: str) -> None:
    from tests.harness import SMTPServer, spawn_app

    smtp = SMTPServer()
    smtp.start()
    try:
        sender = '"Caf\u00e9, \\"Le\\" <Journal>" <news@example.com>'
        async with spawn_app(database_url, smtp, sender=sender) as app:
            admin = await admin_client(app)
            [reader] = await add_confirmed(app.pool, 1)
            received = await _newsletter(app, admin, reader, subject="News", markdown="Hi")
    finally:
        smtp.stop()

    _assert_well_formed(received, NEWSLETTER_HEADERS)
    assert received.raw.split(b"\r\n\r\n", 1)[0].isascii()
    [sent_by] = received.message["From"].addresses
    assert isinstance(sent_by, Address)
    assert (sent_by.display_name, sent_by.addr_spec) == ('Caf\u00e9, "Le" <Journal>', "news@example.com")
