"""Bounce reports as mail servers write them (Postfix's layout), for the tests of bounce handling."""

from __future__ import annotations


def delivery_status_notification(
    recipient: str,
    *,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown",
    to: str = "newsletter@localhost",
    message_id: str = "<20261128100000.4E1C2A0@mx.example.net>",
    return_path: str = "newsletter@localhost",
) -> bytes:
    """A multipart/report (RFC 3464) about one recipient, addressed to `to` (the envelope sender)."""
    diagnostic = diagnostic.format(recipient=recipient)
    return f"""Return-Path: <>
Delivered-To: {to}
Received: by mx.example.net (Postfix) id 4E1C2A0; Sat, 28 Nov 2026 10:00:00 +0000 (UTC)
Date: Sat, 28 Nov 2026 10:00:00 +0000 (UTC)
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {to}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4E1C2A0.1764324000/mx.example.net"
Message-Id: {message_id}

This is a MIME-encapsulated message.

--4E1C2A0.1764324000/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--4E1C2A0.1764324000/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: 4E1C2A0
X-Postfix-Sender: rfc822; {return_path}
Arrival-Date: Sat, 28 Nov 2026 09:59:58 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mail.example.com
Diagnostic-Code: {diagnostic}

--4E1C2A0.1764324000/mx.example.net
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <{return_path}>
From: Newsletter <newsletter@localhost>
To: {recipient}
Subject: Issue #1
Message-ID: <12.1.a1b2c3d4e5f6@localhost>

--4E1C2A0.1764324000/mx.example.net--
""".replace("\n", "\r\n").encode()
