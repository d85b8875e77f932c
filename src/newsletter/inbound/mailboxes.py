"""Mailboxes that bounce reports arrive in: a maildir, an IMAP folder or a POP3 account.

Every message read is marked done once its events are recorded: a maildir moves it to `cur/` with the
Seen flag, IMAP sets \\Seen (both keep the message for a person to look at, and skip it next time), and POP3,
which has no flags, deletes it.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import poplib
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

TIMEOUT_SECONDS = 60
SEEN = "S"
DEFAULT_PORTS = {("imap", "ssl"): 993, ("imap", "starttls"): 143, ("imap", "none"): 143,
                 ("pop3", "ssl"): 995, ("pop3", "starttls"): 110, ("pop3", "none"): 110}  # fmt: skip


class MailboxError(Exception):
    """The mailbox cannot be opened or read; the message says why."""


@contextlib.contextmanager
def _failing_as_mailbox_error(where: str) -> Iterator[None]:
    """The file system, the network or a server refusing a command, told apart from everything else."""
    try:
        yield
    except (OSError, imaplib.IMAP4.error, poplib.error_proto) as error:
        # poplib puts the server's reply in as bytes.
        reply = error.args[0] if len(error.args) == 1 else None
        detail = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(error)
        raise MailboxError(f"{where}: {detail}") from error


class Mailbox(Protocol):
    def unread(self) -> list[str]:
        """Keys of the messages not marked done yet."""
        ...

    def read(self, key: str) -> bytes | None:
        """A message, or None when it is gone since it was listed."""
        ...

    def done(self, keys: Sequence[str]) -> None: ...

    def close(self) -> None: ...


class Maildir:
    def __init__(self, path: Path) -> None:
        if not (path / "new").is_dir() or not (path / "cur").is_dir():
            raise MailboxError(f"{path} is not a maildir: it needs new/ and cur/")
        self.path = path

    def unread(self) -> list[str]:
        with _failing_as_mailbox_error(str(self.path)):
            fresh = [
                f"new/{name}" for name in sorted(os.listdir(self.path / "new")) if not name.startswith(".")
            ]
            unseen = [
                f"cur/{name}"
                for name in sorted(os.listdir(self.path / "cur"))
                if not name.startswith(".") and SEEN not in _maildir_flags(name)
            ]
        return fresh + unseen

    def read(self, key: str) -> bytes | None:
        with _failing_as_mailbox_error(str(self.path / key)):
            try:
                return (self.path / key).read_bytes()
            except FileNotFoundError:
                return None

    def done(self, keys: Sequence[str]) -> None:
        for key in keys:
            name = key.partition("/")[2]
            unique, _, flags = name.partition(":2,")
            seen = "".join(sorted(set(flags) | {SEEN}))
            # A message gone meanwhile was taken by another client.
            with _failing_as_mailbox_error(str(self.path / key)), contextlib.suppress(FileNotFoundError):
                os.replace(self.path / key, self.path / "cur" / f"{unique}:2,{seen}")

    def close(self) -> None:
        return None


def _maildir_flags(name: str) -> str:
    return name.partition(":2,")[2]


@dataclass(frozen=True, slots=True)
class MailboxURL:
    """`imaps://user:password@host[:port][/folder]` or `pop3s://user:password@host[:port]`. `imap://` and
    `pop3://` upgrade with STARTTLS; `?tls=none` turns that off for a server on the same machine."""

    protocol: Literal["imap", "pop3"]
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    tls: Literal["ssl", "starttls", "none"]
    folder: str

    @classmethod
    def parse(cls, raw: str, protocol: Literal["imap", "pop3"]) -> MailboxURL:
        try:
            parts = urlsplit(raw)
            port = parts.port
        except ValueError as error:
            raise MailboxError(f"not a {protocol} URL: {error}") from None
        if parts.scheme not in (protocol, f"{protocol}s"):
            raise MailboxError(f"a {protocol} URL starts with {protocol}s:// or {protocol}://")
        if not parts.hostname or not parts.username or parts.password is None:
            raise MailboxError(f"a {protocol} URL needs a user, a password and a host")
        tls = "ssl" if parts.scheme.endswith("s") else "starttls"
        if parse_qs(parts.query).get("tls") == ["none"]:
            tls = "none"
        folder = unquote(parts.path.lstrip("/")) or "INBOX"
        return cls(
            protocol, parts.hostname, port or DEFAULT_PORTS[(protocol, tls)],
            unquote(parts.username), unquote(parts.password), tls, folder,  # type: ignore[arg-type]
        )  # fmt: skip


class Imap:
    def __init__(self, url: MailboxURL) -> None:
        self.where = f"IMAP {url.host}"
        context = ssl.create_default_context()
        with _failing_as_mailbox_error(self.where):
            if url.tls == "ssl":
                self.connection: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    url.host, url.port, ssl_context=context, timeout=TIMEOUT_SECONDS
                )
            else:
                self.connection = imaplib.IMAP4(url.host, url.port, timeout=TIMEOUT_SECONDS)
                if url.tls == "starttls":
                    self.connection.starttls(context)
            self.connection.login(url.username, url.password)
            status, reply = self.connection.select(_imap_quote(url.folder))
        if status != "OK":
            raise MailboxError(f"{self.where}: cannot open folder {url.folder!r}: {reply!r}")

    def unread(self) -> list[str]:
        with _failing_as_mailbox_error(self.where):
            _, data = self.connection.uid("SEARCH", "UNSEEN")
        return [uid.decode() for item in data if isinstance(item, bytes) for uid in item.split()]

    def read(self, key: str) -> bytes | None:
        # PEEK: the message is marked \Seen only once its events are recorded.
        with _failing_as_mailbox_error(self.where):
            _, data = self.connection.uid("FETCH", key, "(BODY.PEEK[])")
        for item in data:
            if isinstance(item, tuple) and isinstance(item[1], bytes):
                return item[1]
        return None

    def done(self, keys: Sequence[str]) -> None:
        if keys:
            with _failing_as_mailbox_error(self.where):
                self.connection.uid("STORE", ",".join(keys), "+FLAGS.SILENT", r"(\Seen)")

    def close(self) -> None:
        with _failing_as_mailbox_error(self.where):
            self.connection.close()
            self.connection.logout()


def _imap_quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Pop3:
    def __init__(self, url: MailboxURL) -> None:
        self.where = f"POP3 {url.host}"
        context = ssl.create_default_context()
        with _failing_as_mailbox_error(self.where):
            if url.tls == "ssl":
                self.connection: poplib.POP3 = poplib.POP3_SSL(
                    url.host, url.port, context=context, timeout=TIMEOUT_SECONDS
                )
            else:
                self.connection = poplib.POP3(url.host, url.port, timeout=TIMEOUT_SECONDS)
                if url.tls == "starttls":
                    self.connection.stls(context)
            self.connection.user(url.username)
            self.connection.pass_(url.password)

    def unread(self) -> list[str]:
        with _failing_as_mailbox_error(self.where):
            count, _ = self.connection.stat()
        return [str(number) for number in range(1, count + 1)]

    def read(self, key: str) -> bytes | None:
        with _failing_as_mailbox_error(self.where):
            _, lines, _ = self.connection.retr(int(key))
        return b"\r\n".join(lines) + b"\r\n"

    def done(self, keys: Sequence[str]) -> None:
        with _failing_as_mailbox_error(self.where):
            for key in keys:
                self.connection.dele(int(key))

    def close(self) -> None:
        # Deletions take effect only now: a run that dies before this deletes nothing.
        with _failing_as_mailbox_error(self.where):
            self.connection.quit()


def open_mailbox(*, maildir: Path | None, imap: str | None, pop3: str | None) -> Mailbox:
    """The one mailbox given; raises MailboxError when it cannot be opened."""
    if maildir is not None:
        return Maildir(maildir)
    if imap is not None:
        return Imap(MailboxURL.parse(imap, "imap"))
    if pop3 is not None:
        return Pop3(MailboxURL.parse(pop3, "pop3"))
    raise MailboxError("no mailbox given")
