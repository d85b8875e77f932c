"""A DNS server in the test process (dnslib, UDP on 127.0.0.1 and a free port), answering from a small zone
and NXDOMAIN for every other name: what the MX check of sign-ups asks instead of the internet."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer


@dataclass
class Zone(BaseResolver):  # type: ignore[misc]
    """`records` holds zone-file lines ("has-mx.com. 60 IN MX 10 mx.has-mx.com."); a name in `failing`
    answers SERVFAIL. Every question asked is kept in `asked` as (name, type)."""

    records: list[str]
    failing: set[str] = field(default_factory=set)
    asked: list[tuple[str, str]] = field(default_factory=list)

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name, qtype = str(request.q.qname), QTYPE[request.q.qtype]
        self.asked.append((name.rstrip("."), qtype))
        if name in self.failing:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        known = [rr for line in self.records for rr in RR.fromZone(line)]
        if not any(str(rr.rname) == name for rr in known):
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for rr in known:
            if str(rr.rname) == name and QTYPE[rr.rtype] == qtype:
                reply.add_answer(rr)
        return reply


@contextmanager
def running_dns(zone: Zone) -> Iterator[str]:
    """The server answering from `zone`, as "127.0.0.1:port" (what NEWSLETTER_DNS_RESOLVER takes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = DNSServer(zone, address="127.0.0.1", port=port, logger=DNSLogger("error"))
    server.start_thread()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@contextmanager
def silent_dns() -> Iterator[str]:
    """A UDP port that reads questions and never answers: a resolver that times out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{silent.getsockname()[1]}"
