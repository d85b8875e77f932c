"""The `newsletter` command: thin wrappers that parse options, call one function, and report."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import click
from pydantic import ValidationError

from newsletter.config import ConfigError, Settings
from newsletter.db.database import Database
from newsletter.domain.vocabulary import SUBSCRIBER_FILTERS, TokenScope
from newsletter.telemetry import configure_logging


def _settings(**overrides: Any) -> Settings:
    try:
        settings = Settings(**{key: value for key, value in overrides.items() if value is not None})
        settings.check_production()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'setting'}: {item['msg']}"
            for item in error.errors()
        )
        raise click.ClickException(f"invalid configuration: {problems}") from None
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    configure_logging(settings.log_format, settings.log_level)
    return settings


def _run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coroutine)


@click.group()
@click.version_option(package_name="newsletter")
def main() -> None:
    """A self-hosted newsletter service on PostgreSQL."""


def _server_options(command: Any) -> Any:
    command = click.option("--host", help="Interface to listen on (NEWSLETTER_HOST).")(command)
    command = click.option("--port", type=int, help="Port to listen on (NEWSLETTER_PORT).")(command)
    return click.option("--no-migrate", is_flag=True, help="Do not apply migrations on start.")(command)


@main.command()
@_server_options
def run(host: str | None, port: int | None, no_migrate: bool) -> None:
    """Run the HTTP server and the delivery worker in one process."""
    from newsletter.app import run_processes

    settings = _settings(host=host, port=port)
    _run(run_processes(settings, http=True, worker=True, migrate_first=not no_migrate))


@main.command()
@_server_options
def serve(host: str | None, port: int | None, no_migrate: bool) -> None:
    """Run the HTTP server alone (run any number of them)."""
    from newsletter.app import run_processes

    settings = _settings(host=host, port=port)
    _run(run_processes(settings, http=True, worker=False, migrate_first=not no_migrate))


@main.command()
@click.option("--concurrency", type=int, help="Simultaneous sends (NEWSLETTER_SMTP_POOL_SIZE).")
def worker(concurrency: int | None) -> None:
    """Run a delivery worker alone (run any number of them, on any machine)."""
    from newsletter.app import run_processes

    settings = _settings(smtp_pool_size=concurrency)
    _run(run_processes(settings, http=False, worker=True, migrate_first=False))


@main.command("migrate")
def migrate_command() -> None:
    """Apply pending schema migrations (safe to run concurrently)."""
    settings = _settings()

    async def nothing_more(_: Database) -> None:
        return None

    _run(_with_database(settings, nothing_more, wait_seconds=30))
    click.echo("database is up to date")


@main.group()
def tokens() -> None:
    """Admin API tokens."""


@tokens.command("create")
@click.option("--name", required=True, help="What the token is for, e.g. 'CRM sync'.")
@click.option(
    "--scope",
    type=click.Choice([scope.value for scope in TokenScope]),
    default=TokenScope.ADMIN.value,
    show_default=True,
)
def tokens_create(name: str, scope: str) -> None:
    """Create a token and print it once, as the last line."""
    from newsletter.services.access.tokens import create_token

    settings = _settings()

    async def go(db: Database) -> str:
        return await create_token(db, name, TokenScope(scope))

    token = _run(_with_database(settings, go, wait_seconds=30))
    click.echo(f"Created API token {name!r} ({scope}). It is shown only once; keep it safe:")
    click.echo(token)


@main.group()
def users() -> None:
    """Admin users of the web interface (/admin)."""


@users.command("create")
@click.option("--email", required=True, help="The address the user logs in with.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (first line).")
def users_create(email: str, password_stdin: bool) -> None:
    """Create an admin user; the password is asked for twice, or read from standard input."""
    from newsletter.domain.subscriber import InvalidInput, SubscriberEmail
    from newsletter.services.access.accounts import create_user
    from newsletter.services.errors import Conflict, Invalid

    try:
        address = SubscriberEmail.parse(email)
    except InvalidInput as error:
        raise click.BadParameter(str(error), param_hint="--email") from None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    settings = _settings()

    async def go(db: Database) -> None:
        await create_user(db, address, password)

    try:
        _run(_with_database(settings, go))
    except (Conflict, Invalid) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"Created admin user {address.value}; log in at {settings.base_url}/admin")


@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
def config_check() -> None:
    """Print the effective configuration, secrets redacted; fail if it cannot be used."""
    settings = _settings()
    width = max(len(key) for key in settings.redacted())
    for key, value in settings.redacted().items():
        click.echo(f"{key.ljust(width)}  {value}")
    click.echo("configuration is valid" + (" for production" if settings.env == "production" else ""))


@main.command()
@click.option("--maildir", type=click.Path(file_okay=False), help="A maildir (its new/ and cur/).")
@click.option("--imap", "imap_url", metavar="URL", help="imaps://user:password@host/FOLDER (default INBOX).")
@click.option("--pop3", "pop3_url", metavar="URL", help="pop3s://user:password@host")
def bounces(maildir: str | None, imap_url: str | None, pop3_url: str | None) -> None:
    """Read bounce reports (RFC 3464) from a mailbox and apply them: a hard bounce suppresses its address,
    soft bounces do after NEWSLETTER_SOFT_BOUNCE_LIMIT within NEWSLETTER_SOFT_BOUNCE_WINDOW_DAYS.

    Each message read is marked done: moved to the maildir's cur/ with the Seen flag, flagged \\Seen over
    IMAP, deleted over POP3. imap:// and pop3:// use STARTTLS; add ?tls=none for a server on this machine.
    """
    from pathlib import Path

    from newsletter.inbound.dsn import BounceReport, read_bounces
    from newsletter.inbound.mailboxes import MailboxError, open_mailbox
    from newsletter.services.compliance.reports import BounceRules

    if sum(source is not None for source in (maildir, imap_url, pop3_url)) != 1:
        raise click.UsageError("give one of --maildir, --imap or --pop3")
    settings = _settings()
    rules = BounceRules.from_settings(settings)
    secret_key = settings.resolved_secret_key().encode()

    async def go(db: Database) -> BounceReport:
        keys = await asyncio.to_thread(mailbox.unread)
        with click.progressbar(length=len(keys), label="Reading bounce reports") as bar:
            return await read_bounces(
                db, mailbox, keys, secret_key=secret_key, rules=rules, progress=bar.update
            )

    try:
        mailbox = open_mailbox(maildir=Path(maildir) if maildir else None, imap=imap_url, pop3=pop3_url)
        try:
            report = _run(_with_database(settings, go, wait_seconds=30))
        finally:
            mailbox.close()
    except MailboxError as error:
        raise click.ClickException(f"cannot read the mailbox: {error}") from None
    click.echo(
        f"{report.messages} messages read: {report.events} bounces and complaints, {report.recorded} new, "
        f"{report.suppressed} addresses suppressed"
    )


# How rejected rows an import prints at most; the rest are counted.
REJECTED_PRINTED = 100


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--list", "list_slug", default="default", show_default=True, help="The list to subscribe to.")
@click.option(
    "--enter-sequences",
    is_flag=True,
    help="The people it confirms enter the list's sequences (welcome emails).",
)
def import_command(file: str, list_slug: str, enter_sequences: bool) -> None:
    """Import subscribers from a CSV file into a list, as confirmed subscribers.

    The first line names the columns: email (required), name and attributes (a JSON object); other columns are
    ignored. Existing subscribers are updated, never duplicated; people who unsubscribed from the list, are
    blocklisted or suppressed are left alone and reported. All or nothing: one transaction.
    """
    from pathlib import Path

    from newsletter.services.audience.imports import ImportReport, import_csv
    from newsletter.services.errors import Conflict, Invalid, NotFound

    settings = _settings()
    size = Path(file).stat().st_size

    async def go(db: Database) -> ImportReport:
        with (
            open(file, "rb") as source,  # noqa: ASYNC230 - read by the import's parsing thread
            click.progressbar(length=size, label="Importing", file=sys.stderr) as bar,
        ):
            return await import_csv(
                db,
                source,
                list_slug=list_slug,
                progress=lambda done: bar.update(done - bar.pos),
                enter_sequences=enter_sequences,
            )

    try:
        report: ImportReport = _run(_with_database(settings, go))
    except (NotFound, Invalid, Conflict) as error:
        raise click.ClickException(f"nothing imported: {error}") from None
    click.echo(
        f"{report.inserted} inserted, {report.updated} updated, {report.subscribed} subscribed to "
        f"{list_slug!r}, {report.rejected_total} rejected"
    )
    for rejected in report.rejected[:REJECTED_PRINTED]:
        click.echo(
            f"line {rejected.line}: {rejected.reason}" + (f" [{rejected.email}]" if rejected.email else "")
        )
    if report.rejected_total > REJECTED_PRINTED:
        click.echo(f"... and {report.rejected_total - REJECTED_PRINTED} more rejected rows")


@main.command("export")
@click.option("--list", "list_slug", help="Only the subscriptions to this list.")
@click.option(
    "--status",
    type=click.Choice([status.value for status in SUBSCRIBER_FILTERS]),
    help="The subscriber's status (active, blocklisted) or the subscription's.",
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, writable=True), help="A file (default: stdout)."
)
def export_command(list_slug: str | None, status: str | None, output: str | None) -> None:
    """Export subscribers as CSV, one row per subscription; the file imports back as it is."""
    from newsletter.services.audience.imports import export_csv
    from newsletter.services.errors import Invalid, NotFound

    settings = _settings()

    async def go(db: Database) -> None:
        chunks = export_csv(db, list_slug=list_slug, status=status)
        header = await anext(chunks)  # the list and status are checked before anything is written
        with open(output, "wb") if output else contextlib.nullcontext(sys.stdout.buffer) as target:  # noqa: ASYNC230
            target.write(header)
            async for chunk in chunks:
                target.write(chunk)
            target.flush()

    try:
        _run(_with_database(settings, go))
    except (NotFound, Invalid) as error:
        raise click.ClickException(str(error)) from None


async def _with_database(
    settings: Settings, work: Callable[[Database], Coroutine[Any, Any, Any]], *, wait_seconds: float = 5
) -> Any:
    """Run `work` on the configured (or embedded) database, migrated first."""
    from newsletter.app import apply_migrations, database
    from newsletter.db.database import DATABASE_ERRORS, create_pool

    async with database(settings) as url:
        try:
            pool = await create_pool(url, settings, wait_seconds=wait_seconds)
        except DATABASE_ERRORS as error:
            raise click.ClickException(f"cannot connect to the database: {error}") from None
        try:
            await apply_migrations(pool)
            return await work(Database(pool))
        except DATABASE_ERRORS as error:
            raise click.ClickException(f"database error: {error}") from None
        finally:
            await pool.close()


if __name__ == "__main__":
    sys.exit(main())
