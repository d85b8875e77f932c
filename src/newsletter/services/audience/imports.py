"""CSV import and export of subscribers, set-based.

Import: rows are parsed and validated in Python (in a thread, so the event loop keeps serving and the parsing
of one chunk overlaps the COPY of the previous one), copied into a temporary staging table, then merged by one
set-based statement in the same transaction. Export: PostgreSQL's own `COPY ... TO STDOUT`, streamed in
chunks.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache, partial
from typing import Any, BinaryIO

import asyncpg
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from email_validator.syntax import validate_email_domain_name

from newsletter.db.database import Database
from newsletter.db.queries import Q
from newsletter.domain.subscriber import (
    MAX_EMAIL_LENGTH,
    MAX_LOCAL_PART_LENGTH,
    MAX_NAME_LENGTH,
    InvalidInput,
    ListSlug,
    SubscriberEmail,
    SubscriberName,
)
from newsletter.domain.vocabulary import SUBSCRIBER_FILTERS, SubscriberStatus, SubscriptionStatus
from newsletter.services.audience.lists import list_id_of
from newsletter.services.errors import Conflict, Invalid

# Rows parsed and copied at a time: memory stays flat whatever the size of the file.
CHUNK_ROWS = 20_000
# The report names this many rejected rows at most (the first ones); all of them are counted.
MAX_REJECTED_LISTED = 10_000
MAX_ATTRIBUTES_BYTES = 16_384
# A rejected field is shown back cut to this many characters.
SHOWN_LENGTH = 320
COLUMNS = ("email", "name", "attributes")
# What an export says of a row that an import must not turn into a confirmed subscription.
_REFUSED_STATUSES = {
    SubscriptionStatus.UNSUBSCRIBED: "unsubscribed in the file: not subscribed again",
    SubscriptionStatus.PENDING: "pending in the file (never confirmed): not subscribed",
    "": "no subscription in the file: not subscribed",
}
EXPORT_STATUSES = SUBSCRIBER_FILTERS
EXPORT_HEADER = (
    b"email,name,attributes,subscriber_status,list,status,subscribed_at,confirmed_at,unsubscribed_at\n"
)
COPIED_COLUMNS = ("line", "email", "name", "attributes_text")
# The merge runs over the whole file; the pool's per-statement timeout suits requests.
MERGE_TIMEOUT_SECONDS = 3600
# How many times an import runs when sign-ups of its addresses keep committing while it runs.
IMPORT_ATTEMPTS = 2


@dataclass(frozen=True)
class Rejected:
    line: int
    email: str
    reason: str


@dataclass(frozen=True)
class ImportReport:
    """What an import did. `inserted` + `updated` + `rejected_total` is the number of data rows in the file.

    inserted: new subscribers. updated: subscribers who existed already (name and attributes applied where the
    file gives them). subscribed: subscriptions to the list created or confirmed by the import. rejected: the
    first MAX_REJECTED_LISTED rows left out, each with its reason; rejected_total counts them all.
    """

    inserted: int
    updated: int
    subscribed: int
    rejected: list[Rejected]
    rejected_total: int = field(default=0)

    def __post_init__(self) -> None:
        if self.rejected_total < len(self.rejected):
            object.__setattr__(self, "rejected_total", len(self.rejected))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# An address the fast path answers for: a local part that email-validator keeps as it is (RFC 5322 dot-atom,
# ASCII: rfc_constants.DOT_ATOM_TEXT), one @-sign, and a domain to look up.
_PLAIN_ADDRESS = re.compile(
    r"([a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+)*)@([^@]+)"
)
_ROLE_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
_LONGEST_ROLE_NAME = max(map(len, CASE_INSENSITIVE_MAILBOX_NAMES))


@lru_cache(maxsize=65_536)
def _domain(domain: str) -> tuple[str, int] | None:
    """The domain as SubscriberEmail.parse normalizes it, and the longest local part it leaves room for; None
    when the parser refuses the domain."""
    try:
        normalized = SubscriberEmail.parse("x@" + domain).value[2:]
    except InvalidInput:
        return None
    # The parser checks the length of the address as given, as normalized and with an IDNA (ASCII) domain.
    ascii_domain = validate_email_domain_name(domain)["ascii_domain"]
    longest = max(len(domain.encode()), len(normalized.encode()), len(ascii_domain))
    return normalized, min(MAX_LOCAL_PART_LENGTH, MAX_EMAIL_LENGTH - 1 - longest)


def normalize_email(raw: str) -> str:
    """Exactly `SubscriberEmail.parse(raw).value`, many times faster for the usual addresses.

    The fast path answers only for one @-sign and a dot-atom ASCII local part, which email-validator keeps as
    it is (lowercasing only the RFC 2142 role names), and a domain that the full parser accepts: domains are
    few, so each is parsed once and cached. Anything else takes the full parser, which also words every error.
    tests/unit/test_imports.py checks the equivalence with hypothesis.
    """
    plain = _PLAIN_ADDRESS.fullmatch(raw.strip())
    if plain:
        local, domain = plain.groups()
        known = _domain(domain)
        if known is not None and len(local) <= known[1]:
            if len(local) <= _LONGEST_ROLE_NAME and local.lower() in _ROLE_NAMES:
                local = local.lower()
            return f"{local}@{known[0]}"
    return SubscriberEmail.parse(raw).value


def normalize_name(raw: str) -> str:
    """Exactly `SubscriberName.parse(raw).value`: a printable string holds no character of the categories that
    SubscriberName refuses (str.isprintable is false for every 'Other' and every separator but the space), so
    only the others take the full check."""
    candidate = unicodedata.normalize("NFC", raw.strip())
    if len(candidate) <= MAX_NAME_LENGTH and candidate.isprintable():
        return candidate
    return SubscriberName.parse(raw).value


def _attributes(raw: str) -> str:
    """The attributes as compact JSON text that PostgreSQL's jsonb accepts, or InvalidInput."""
    if len(raw) > 4 * MAX_ATTRIBUTES_BYTES:
        raise InvalidInput(f"attributes: larger than {MAX_ATTRIBUTES_BYTES // 1024} KB")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise InvalidInput(f"attributes: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise InvalidInput('attributes: must be a JSON object, e.g. {"city": "Paris"}')
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        text.encode("utf-8")
    except ValueError:
        # NaN and Infinity (also what a number too large for a double becomes), or an unpaired surrogate
        # escape such as \ud800: not JSON that PostgreSQL stores.
        raise InvalidInput(
            "attributes: holds a value that is not valid JSON (NaN, Infinity, \\ud800...)"
        ) from None
    if len(text) > MAX_ATTRIBUTES_BYTES:
        raise InvalidInput(f"attributes: larger than {MAX_ATTRIBUTES_BYTES // 1024} KB")
    if "\\u0000" in text and _holds_nul(value):
        raise InvalidInput("attributes: holds a NUL character (\\u0000)")
    return text


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


# A cell an export neutralised for spreadsheets (see csv_cell in migration 0012): one apostrophe before a
# run of apostrophes and a character that starts a formula.
_NEUTRALISED = re.compile(r"'+[=+\-@\t\r]")


def read_cell(raw: str) -> str:
    """A cell as the export wrote it, back to its value: the apostrophe an export put in front of a cell that
    a spreadsheet would run as a formula is taken off; nothing else changes."""
    return raw[1:] if raw.startswith("'") and _NEUTRALISED.match(raw) else raw


def write_cell(value: str) -> str:
    """The export's neutralisation (csv_cell in SQL), for the tests that check both agree."""
    return "'" + value if re.match(r"'*[=+\-@\t\r]", value) else value


def _shown(raw: str) -> str:
    """A raw field as it may be shown back in a report or on a terminal: valid text, printable, not huge."""
    text = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:SHOWN_LENGTH]
    return text if text.isprintable() else "".join(char if char.isprintable() else "?" for char in text)


class _Counting(io.RawIOBase):
    """The source as a raw stream that reports how many bytes were read so far."""

    def __init__(self, source: BinaryIO, progress: Callable[[int], None] | None) -> None:
        self._source = source
        self._progress = progress
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self._read += size
        if self._progress is not None and size:
            self._progress(self._read)
        return size


Staged = tuple[int, str, str | None, str | None]


class RowParser:
    """Reads the CSV and yields valid rows in chunks, collecting the rejected ones with their reasons.

    Each chunk is a list of (line, email, name or None, attributes JSON text or None); None means that the
    file does not give the value, so an existing subscriber keeps theirs.

    A file exported by this service also says where each row stood: rows of another list than `list_slug`
    (an export holds one row per subscription), rows of a subscription that was unsubscribed or never
    confirmed, of people in no list, and of blocklisted people are rejected, so that importing an export
    never subscribes anyone who said no or never said yes.
    """

    def __init__(
        self,
        source: BinaryIO,
        progress: Callable[[int], None] | None = None,
        *,
        list_slug: str | None = None,
    ) -> None:
        # utf-8-sig drops a byte order mark; surrogateescape keeps undecodable bytes so that their row alone
        # is rejected, not the file.
        stream = io.BufferedReader(_Counting(source, progress), buffer_size=1 << 20)
        self._text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
        # Strict: a quote that opens a field and is never closed (or closed mid-field) is an error for its
        # row, where the lenient reader would silently read the rest of the file into that one field.
        self._reader = csv.reader(self._text, strict=True)
        self.rejected: list[Rejected] = []
        self.rejected_total = 0
        self.rows = 0
        self._last_line = 0
        header = self._header()
        self._width = len(header)
        self._email = header.index("email")
        self._name = header.index("name") if "name" in header else None
        self._attributes = header.index("attributes") if "attributes" in header else None
        self._list_slug = list_slug
        self._list = header.index("list") if "list" in header and list_slug is not None else None
        # A subscription's status is read from a file shaped as an export (a list and a status column), where
        # an empty one is a person without any subscription.
        self._status = header.index("status") if "status" in header and "list" in header else None
        self._subscriber_status = header.index("subscriber_status") if "subscriber_status" in header else None

    def _header(self) -> list[str]:
        try:
            first = next(self._reader, None)
        except csv.Error as error:
            raise Invalid(f"the first line is not a CSV header: {error}") from None
        self._last_line = self._reader.line_num
        header = [column.strip().lower() for column in first or []]
        if "email" not in header:
            found = ", ".join(_shown(column) for column in header if column) or "nothing"
            raise Invalid(f"the file has no 'email' column in its first line (found: {found})")
        for column in COLUMNS:
            if header.count(column) > 1:
                raise Invalid(f"the file has more than one {column!r} column")
        return header

    def _reject(self, line: int, email: str, reason: str) -> None:
        self.rejected_total += 1
        if len(self.rejected) < MAX_REJECTED_LISTED:
            self.rejected.append(Rejected(line, _shown(email), reason))

    def chunks(self) -> Iterator[list[Staged]]:
        while chunk := self.next_chunk():
            yield chunk

    def next_chunk(self, size: int = CHUNK_ROWS) -> list[Staged]:
        """Up to `size` valid rows; an empty list at the end of the file."""
        chunk: list[Staged] = []
        reader = self._reader
        width, email_at, name_at, attributes_at = self._width, self._email, self._name, self._attributes
        while len(chunk) < size:
            line = self._last_line + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                self._last_line = reader.line_num
                reason = f"malformed CSV: {error}"
                if reader.line_num > line:
                    reason += f" (lines {line}-{reader.line_num} read as one row: a quote left open?)"
                self._reject(line, "", reason)
                continue
            self._last_line = reader.line_num
            if not row:
                continue  # a blank line
            self.rows += 1
            if len(row) != width:
                raw = row[email_at] if email_at < len(row) else ""
                self._reject(line, raw, f"expected {width} fields as in the header, found {len(row)}")
                continue
            if "'" in (joined := "".join(row)):
                row = [read_cell(cell) for cell in row]
            raw_email = row[email_at]
            if not joined.isascii():
                try:
                    joined.encode("utf-8")
                except UnicodeEncodeError:
                    self._reject(line, raw_email, "not valid UTF-8")
                    continue
            refusal = self._refusal(row)
            if refusal is not None:
                self._reject(line, raw_email, refusal)
                continue
            try:
                if not raw_email.strip():
                    raise InvalidInput("email: missing")
                try:
                    email = normalize_email(raw_email)
                except InvalidInput as error:
                    raise InvalidInput(f"email: {error}") from None
                name = None
                if name_at is not None and row[name_at]:
                    try:
                        name = normalize_name(row[name_at]) or None
                    except InvalidInput as error:
                        raise InvalidInput(f"name: {error}") from None
                attributes = None
                if attributes_at is not None and row[attributes_at].strip():
                    attributes = _attributes(row[attributes_at])
            except InvalidInput as error:
                self._reject(line, raw_email, str(error))
                continue
            chunk.append((line, email, name, attributes))
        return chunk

    def _refusal(self, row: list[str]) -> str | None:
        """Why the file itself says this row must not be subscribed (see the class), or None."""
        standing = row[self._subscriber_status] if self._subscriber_status is not None else ""
        if standing.strip().lower() == SubscriberStatus.BLOCKLISTED:
            return "blocklisted in the file: not imported"
        if self._list is not None:
            named = row[self._list].strip().lower()
            if named and named != self._list_slug:
                return f"a subscription to list {_shown(named)!r}, not {self._list_slug!r}: not imported"
        if self._status is not None:
            return _REFUSED_STATUSES.get(row[self._status].strip().lower())
        return None


async def import_csv(
    db: Database,
    source: BinaryIO,
    *,
    list_slug: str,
    progress: Callable[[int], None] | None = None,
    enter_sequences: bool = False,
) -> ImportReport:
    """Import subscribers from a CSV file into a list, as confirmed subscriptions (consent source 'import').
    With `enter_sequences`, the people it confirms enter the list's sequences (SPEC section 12).

    Raises NotFound for an unknown list and Invalid for a file without an email column (nothing written).
    Runs in one transaction (a savepoint when the caller holds one): all or nothing. When a sign-up of an
    address of the file commits while the import runs, the import starts again from the beginning of the
    source (once more at most, then Conflict).
    """
    async with db.connection() as conn:
        list_id = await list_id_of(conn, list_slug)
    slug = ListSlug.parse(list_slug).value
    start = source.tell() if source.seekable() else None
    attempt = 1
    while True:
        parser = await asyncio.to_thread(partial(RowParser, source, progress, list_slug=slug))
        try:
            async with db.transaction() as conn:
                if enter_sequences:
                    await conn.execute(Q.import_enters_sequences)
                return await _merge(conn, parser, list_id)
        except asyncpg.UniqueViolationError as error:
            if error.constraint_name != "subscribers_email_key":
                raise
            if start is None or attempt == IMPORT_ATTEMPTS:
                raise Conflict("addresses of the file signed up while it was imported; try again") from None
        attempt += 1
        source.seek(start)


async def _merge(conn: asyncpg.Connection, parser: RowParser, list_id: int) -> ImportReport:
    """Copies the parsed rows into the staging table, chunk by chunk (the parser's thread reads and validates
    the next chunk during the COPY of the previous one), then merges them all with one statement."""
    await conn.execute(Q.import_prepare)
    await conn.execute(Q.import_staging)
    pending = asyncio.ensure_future(asyncio.to_thread(parser.next_chunk))
    try:
        while chunk := await pending:
            pending = asyncio.ensure_future(asyncio.to_thread(parser.next_chunk))
            await conn.copy_records_to_table(
                "import_rows", records=chunk, columns=COPIED_COLUMNS, timeout=MERGE_TIMEOUT_SECONDS
            )
    finally:
        # A COPY that failed leaves the parser's thread running: let it finish before the source closes.
        if not pending.done():
            await asyncio.wait([pending])
    await conn.execute(Q.import_analyze, timeout=MERGE_TIMEOUT_SECONDS)
    await conn.execute(Q.import_restore_suppressions, timeout=MERGE_TIMEOUT_SECONDS)
    merged = await conn.fetchrow(Q.import_merge, list_id, MAX_REJECTED_LISTED, timeout=MERGE_TIMEOUT_SECONDS)
    left_out = map(Rejected, merged["lines"], map(_shown, merged["emails"]), merged["reasons"])
    return ImportReport(
        inserted=merged["inserted"],
        updated=merged["updated"],
        subscribed=merged["subscribed"],
        rejected=sorted([*parser.rejected, *left_out], key=lambda item: item.line)[:MAX_REJECTED_LISTED],
        rejected_total=parser.rejected_total + merged["rejected"],
    )


async def export_csv(
    db: Database, *, list_slug: str | None = None, status: str | None = None
) -> AsyncIterator[bytes]:
    """The subscribers as CSV, a header line and then chunks as PostgreSQL sends them.

    One row per subscription (a person in two lists appears twice); with `list_slug`, one per subscriber of
    that list. `status` filters on the subscriber's (active, blocklisted) or the subscription's (pending,
    confirmed, unsubscribed). The file imports back list by list: the import reads email, name and
    attributes, and leaves out the rows of other lists, of people in no list, and those marked unsubscribed,
    pending or blocklisted.
    Unknown list or status: NotFound or Invalid, raised before the header is yielded.
    """
    async with db.dedicated() as conn:
        async for chunk in _export(conn, list_slug, status):
            yield chunk


async def _export(
    conn: asyncpg.Connection, list_slug: str | None, status: str | None
) -> AsyncIterator[bytes]:
    list_id = await list_id_of(conn, list_slug) if list_slug is not None else None
    if status is not None and status not in EXPORT_STATUSES:
        raise Invalid(f"status: one of {', '.join(EXPORT_STATUSES)}")
    yield EXPORT_HEADER
    # A bounded queue between the COPY and the consumer: a slow reader slows the COPY down (backpressure).
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)
    consumer_gone = False

    async def put(data: bytes | bytearray) -> None:
        await chunks.put(bytes(data))

    async def copy() -> None:
        try:
            await conn.copy_from_query(
                Q.export_subscribers, list_id, status, output=put, format="csv", timeout=None
            )
        finally:
            if not consumer_gone:
                await chunks.put(None)

    copying = asyncio.ensure_future(copy())
    try:
        while (chunk := await chunks.get()) is not None:
            yield chunk
        await copying  # raises what the COPY raised
    finally:
        if not copying.done():
            consumer_gone = True
            copying.cancel()
            await asyncio.wait([copying])
