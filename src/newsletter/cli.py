"""The `newsletter` command: thin wrappers that parse options, call one function, and report."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import click
from pydantic import ValidationError

from newsletter.config import ConfigError, Settings
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
    from newsletter.app import apply_migrations, create_pool, database

    settings = _settings()

    async def go() -> None:
        async with database(settings) as url:
            pool = await create_pool(url, settings)
            try:
                await apply_migrations(pool)
            finally:
                await pool.close()

    _run(go())
    click.echo("database is up to date")


@main.group()
def tokens() -> None:
    """Admin API tokens."""


@tokens.command("create")
@click.option("--name", required=True, help="What the token is for, e.g. 'CRM sync'.")
@click.option("--scope", type=click.Choice(["admin", "read"]), default="admin", show_default=True)
def tokens_create(name: str, scope: str) -> None:
    """Create a token and print it once, as the last line."""
    from newsletter.app import apply_migrations, create_pool, database
    from newsletter.services.tokens import create_token

    settings = _settings()

    async def go() -> str:
        async with database(settings) as url:
            pool = await create_pool(url, settings)
            try:
                await apply_migrations(pool)
                return await create_token(pool, name, scope)
            finally:
                await pool.close()

    token = _run(go())
    click.echo(f"Created API token {name!r} ({scope}). It is shown only once; keep it safe:")
    click.echo(token)


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

    from newsletter.app import apply_migrations, create_pool, database
    from newsletter.services.bounces import BounceReport, read_bounces
    from newsletter.services.events import BounceRules
    from newsletter.transports.mailboxes import MailboxError, open_mailbox

    if sum(source is not None for source in (maildir, imap_url, pop3_url)) != 1:
        raise click.UsageError("give one of --maildir, --imap or --pop3")
    settings = _settings()
    rules = BounceRules.from_settings(settings)
    secret_key = settings.resolved_secret_key().encode()

    async def go() -> BounceReport:
        mailbox = await asyncio.to_thread(
            open_mailbox, maildir=Path(maildir) if maildir else None, imap=imap_url, pop3=pop3_url
        )
        try:
            async with database(settings) as url:
                pool = await create_pool(url, settings)
                try:
                    await apply_migrations(pool)
                    keys = await asyncio.to_thread(mailbox.unread)
                    with click.progressbar(length=len(keys), label="Reading bounce reports") as bar:
                        return await read_bounces(
                            pool, mailbox, keys, secret_key=secret_key, rules=rules, progress=bar.update
                        )
                finally:
                    await pool.close()
        finally:
            await asyncio.to_thread(mailbox.close)

    try:
        report = _run(go())
    except MailboxError as error:
        raise click.ClickException(f"cannot read the mailbox: {error}") from None
    click.echo(
        f"{report.messages} messages read: {report.events} bounces and complaints, {report.recorded} new, "
        f"{report.suppressed} addresses suppressed"
    )


if __name__ == "__main__":
    sys.exit(main())
