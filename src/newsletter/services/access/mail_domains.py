"""The optional MX check of sign-ups (`NEWSLETTER_SIGNUP_CHECK_MX`): an address whose domain has no mail host
(no MX, no A, no AAAA record, or the null MX of RFC 7505) can never receive the confirmation, so it is refused
at once. Only a definite answer refuses: when DNS fails or is slow the sign-up goes on (fail open, logged),
and the confirmation email finds out as it always did."""

from __future__ import annotations

import enum

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import structlog

from newsletter.config import DnsServer, Settings
from newsletter.domain.subscriber import SubscriberEmail
from newsletter.telemetry import SIGNUP_MAIL_DOMAINS

log = structlog.get_logger(__name__)

NO_MAIL_HOST = "This address's domain does not receive email; please check the part after the @."


class MailHost(enum.Enum):
    FOUND = "accepted"
    NONE = "refused"
    UNKNOWN = "unknown"


class MailDomains:
    """Asks DNS whether a domain has a mail host, through the configured resolver or the system's."""

    def __init__(self, nameserver: DnsServer | None, timeout_seconds: float) -> None:
        if nameserver is None:
            self._resolver = dns.asyncresolver.Resolver()
        else:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [nameserver.host]
            self._resolver.port = nameserver.port
        self._resolver.lifetime = timeout_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> MailDomains | None:
        if not settings.signup_check_mx:
            return None
        server = DnsServer.parse(settings.dns_resolver) if settings.dns_resolver else None
        return cls(server, settings.dns_timeout_seconds)

    async def accepts(self, email: SubscriberEmail) -> bool:
        """False only when DNS says for sure that the address's domain receives no mail."""
        domain = email.value.rpartition("@")[2]
        found = await self.mail_host(domain)
        SIGNUP_MAIL_DOMAINS.labels(found.value).inc()
        return found is not MailHost.NONE

    async def mail_host(self, domain: str) -> MailHost:
        try:
            name = dns.name.from_text(domain)  # absolute: no search domains are tried
            mx = await self._answer(name, dns.rdatatype.MX)
            if mx is not None:
                # A null MX (a single "." exchange) says the domain accepts no mail at all.
                hosts = [record.exchange for record in mx]
                return MailHost.NONE if hosts == [dns.name.root] else MailHost.FOUND
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                if await self._answer(name, rdtype) is not None:
                    return MailHost.FOUND
            return MailHost.NONE
        except dns.resolver.NXDOMAIN:
            return MailHost.NONE
        except dns.exception.DNSException as error:
            reason = f"{type(error).__name__}: {error}"
            log.warning("MX check failed; the sign-up goes on", domain=domain, error=reason)
            return MailHost.UNKNOWN

    async def _answer(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.resolver.Answer | None:
        """The records of that type, or None when the name exists without any."""
        try:
            return await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NoAnswer:
            return None
