"""What the composition root (app.py) gives every request, in one place: `context(request).db` and so on."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from newsletter.config import Settings
from newsletter.db.database import Database
from newsletter.db.wake import Waker
from newsletter.inbound.providers.sns import SnsVerifier
from newsletter.services.access.mail_domains import MailDomains
from newsletter.services.sending.compose import Composer


@dataclass(frozen=True, slots=True)
class Context:
    settings: Settings
    db: Database
    composer: Composer
    waker: Waker
    # Verifies Amazon SNS messages, keeping the signing certificates it fetched.
    sns: SnsVerifier
    # Signs unsubscribe links, sessions, CSRF tokens and notices.
    secret_key: bytes
    # Asks DNS whether a sign-up's domain receives mail (NEWSLETTER_SIGNUP_CHECK_MX); None when that is off.
    mail_domains: MailDomains | None


def context(request: Request) -> Context:
    found: Context = request.app.state.context
    return found
