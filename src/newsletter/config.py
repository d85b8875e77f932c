"""Configuration from the environment (and a `.env` file), parsed once at start-up."""

from __future__ import annotations

import ipaddress
import secrets
import unicodedata
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name, not a secret


class ConfigError(ValueError):
    """The configuration cannot be used; the message says what to change."""


@dataclass(frozen=True)
class EmailURL:
    """A parsed `NEWSLETTER_EMAIL_URL`."""

    scheme: Literal["smtp", "file", "postmark", "memory"]
    host: str = ""
    port: int = 0
    username: str | None = None
    password: str | None = None
    tls: Literal["none", "starttls", "ssl"] = "none"
    path: Path | None = None

    @classmethod
    def parse(cls, raw: str) -> EmailURL:
        parts = urlsplit(raw)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        if parts.scheme == "smtp":
            tls = query.get("tls", "none")
            if tls not in ("none", "starttls", "ssl"):
                raise ConfigError(f"NEWSLETTER_EMAIL_URL: tls must be starttls or ssl, not {tls!r}")
            if not parts.hostname:
                raise ConfigError("NEWSLETTER_EMAIL_URL: an smtp:// URL needs a host")
            default_port = 465 if tls == "ssl" else 25
            return cls(
                scheme="smtp",
                host=parts.hostname,
                port=parts.port or default_port,
                username=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None,
                tls=tls,  # type: ignore[arg-type]
            )
        if parts.scheme == "file":
            if not parts.path:
                raise ConfigError(
                    "NEWSLETTER_EMAIL_URL: a file:// URL needs a directory, e.g. file:///var/mail"
                )
            return cls(scheme="file", path=Path(unquote(parts.path)))
        if parts.scheme == "postmark":
            if not parts.username:
                raise ConfigError("NEWSLETTER_EMAIL_URL: postmark://TOKEN@[host] needs a server token")
            host = parts.netloc.rsplit("@", 1)[-1] or "api.postmarkapp.com"
            return cls(scheme="postmark", host=host, password=unquote(parts.username))
        if parts.scheme == "memory":
            return cls(scheme="memory")
        raise ConfigError(
            f"NEWSLETTER_EMAIL_URL: unknown scheme {parts.scheme!r} (use smtp://, file:// or postmark://)"
        )

    def redacted(self) -> str:
        if self.scheme == "smtp":
            auth = f"{self.username}:***@" if self.username else ""
            tls = f"?tls={self.tls}" if self.tls != "none" else ""
            return f"smtp://{auth}{self.host}:{self.port}{tls}"
        if self.scheme == "file":
            return f"file://{self.path}"
        if self.scheme == "postmark":
            return f"postmark://***@{self.host}"
        return "memory://"


@dataclass(frozen=True)
class DnsServer:
    """A parsed `NEWSLETTER_DNS_RESOLVER`: an IP address and a port (53 unless given)."""

    host: str
    port: int = 53

    @classmethod
    def parse(cls, raw: str) -> DnsServer:
        host, port = raw.strip(), "53"
        if host.startswith("["):  # [2001:db8::1]:5353
            host, _, rest = host[1:].partition("]")
            port = rest.removeprefix(":") or port
        elif host.count(":") == 1:
            host, port = host.split(":")
        try:
            address = ipaddress.ip_address(host)
            number = int(port)
        except ValueError:
            raise ValueError("must be an IP address with an optional port, e.g. 127.0.0.1:5353") from None
        if not 0 < number < 65536:
            raise ValueError("the port must be between 1 and 65535")
        return cls(host=str(address), port=number)


class Settings(BaseSettings):
    """Every setting has a safe default for local use; production requires the secrets to be set."""

    model_config = SettingsConfigDict(
        env_prefix="NEWSLETTER_", env_file=".env", extra="ignore", populate_by_name=True
    )

    env: Literal["development", "production"] = "development"
    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "NEWSLETTER_DATABASE_URL")
    )
    data_dir: Path = Path(".newsletter")
    base_url: str = "http://127.0.0.1:8000"
    email_url: SecretStr | None = None
    sender: str = "Newsletter <newsletter@localhost>"
    secret_key: SecretStr | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"

    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # CSV imports over the API (POST /api/v1/subscribers/import) alone may send this much.
    max_import_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    confirmation_ttl_hours: float = Field(default=48, gt=0)
    signup_ip_limit: int = Field(default=30, ge=1)
    signup_ip_window_seconds: int = Field(default=3600, ge=1)
    signup_address_limit: int = Field(default=5, ge=1)
    signup_address_window_seconds: int = Field(default=3600, ge=1)
    # Bot protection (SPEC section 13): `pow` asks every sign-up for a proof of work (the ALTCHA protocol)
    # found among so many numbers (a browser tries about half of them: well under a second by default) and
    # valid for so long; the MX check refuses addresses whose domain has no mail host, asking
    # `dns_resolver` (host[:port]) when set, else the system's resolvers.
    signup_challenge: Literal["none", "pow"] = "none"
    signup_challenge_max_number: int = Field(default=50_000, ge=1, le=10_000_000)
    signup_challenge_ttl_seconds: int = Field(default=600, ge=10)
    signup_check_mx: bool = False
    dns_resolver: str | None = None
    dns_timeout_seconds: float = Field(default=3, gt=0)

    worker_batch_size: int = Field(default=500, ge=1)
    worker_concurrency: int = Field(default=2, ge=1, le=64)
    smtp_pool_size: int = Field(default=10, ge=1)
    smtp_timeout_seconds: float = Field(default=30, gt=0)
    lease_seconds: float = Field(default=120, gt=0)
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    retry_base_seconds: float = Field(default=30, gt=0)
    retry_max_seconds: float = Field(default=3600, gt=0)
    max_attempts: int = Field(default=8, ge=1)
    retry_max_age_seconds: float = Field(default=3 * 24 * 3600, gt=0)

    idempotency_wait_seconds: float = Field(default=10, gt=0)
    send_rate_per_second: float | None = Field(default=None, gt=0)
    send_rate_per_hour: float | None = Field(default=None, gt=0)

    purge_unconfirmed_days: int = Field(default=30, ge=1)

    # The admin web interface: how long a login lasts, and how many login attempts a network address and an
    # account may make within the window before they are refused for the rest of it.
    admin_session_hours: float = Field(default=12, gt=0)
    admin_login_ip_limit: int = Field(default=20, ge=1)
    admin_login_email_limit: int = Field(default=10, ge=1)
    admin_login_window_seconds: int = Field(default=900, ge=1)

    # Confirmation and unsubscribe links: how many wrong tokens one network address may present within the
    # window before every token it presents is refused (429) for the rest of it. Right tokens never count.
    token_guess_limit: int = Field(default=20, ge=1)
    token_guess_window_seconds: int = Field(default=900, ge=1)

    # Bounces and complaints: how many soft bounces within how many days suppress an address, and the
    # credentials of each provider's webhook (unset: that webhook rejects everything).
    # Each email's envelope sender names its delivery (bounces+ID-MAC@sender domain), so that a bounce
    # read by `newsletter bounces` finds the delivery it is about.
    verp_return_path: bool = True
    soft_bounce_limit: int = Field(default=3, ge=1)
    soft_bounce_window_days: int = Field(default=30, ge=1)
    ses_topic_arns: Annotated[frozenset[str], NoDecode] = frozenset()
    # Web origins (scheme://host[:port]) whose pages may sign people up with cross-origin JSON requests to
    # POST /subscriptions (CORS); comma separated. Empty: none may. A plain HTML form posts from anywhere.
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()
    sendgrid_public_key: str | None = None
    postmark_webhook_user: str | None = None
    postmark_webhook_password: SecretStr | None = None

    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_private_key: SecretStr | None = None
    dkim_private_key_file: Path | None = None

    # The event record, and the webhooks that carry it (SPEC section 11). Endpoints on loopback, private or
    # link-local addresses are refused unless allowed (a receiver on the same machine, the tests).
    event_retention_days: int = Field(default=30, ge=1)
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = Field(default=10, gt=0)
    webhook_concurrency: int = Field(default=16, ge=1, le=256)
    webhook_endpoint_concurrency: int = Field(default=8, ge=1, le=256)
    webhook_retry_base_seconds: float = Field(default=5, gt=0)
    webhook_retry_max_seconds: float = Field(default=3600, gt=0)
    webhook_give_up_hours: float = Field(default=72, gt=0)
    webhook_disable_after_hours: float = Field(default=72, gt=0)
    # Automations (SPEC section 12): due steps are queued this many at a time, in one statement each.
    sequence_sweep_batch: int = Field(default=50_000, ge=1, le=1_000_000)
    # ... on so many connections side by side: a large sweep uses more than one of the database's cores.
    sequence_sweep_connections: int = Field(default=2, ge=1, le=16)

    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)

    @field_validator("ses_topic_arns", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("dns_resolver")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value:
            DnsServer.parse(value)
        return value or None

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        raw = value.split(",") if isinstance(value, str) else value
        return tuple(dict.fromkeys(parse_origin(part) for part in raw if part.strip()))

    @field_validator("base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("sender")
    @classmethod
    def _valid_sender(cls, value: str) -> str:
        if any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in value):
            raise ValueError("must not contain line breaks or control characters")
        _, address = parseaddr(value)
        if "@" not in address:
            raise ValueError("must be an address such as 'Name <news@example.com>'")
        return value

    @model_validator(mode="after")
    def _valid_email_url(self) -> Settings:
        if self.email_url is not None:
            EmailURL.parse(self.email_url.get_secret_value())
        return self

    @property
    def email(self) -> EmailURL:
        if self.email_url is None:
            return EmailURL(scheme="file", path=self.data_dir.resolve() / "outbox")
        return EmailURL.parse(self.email_url.get_secret_value())

    def dkim_key(self) -> bytes | None:
        """The DKIM private key (PEM), when signing is configured."""
        if self.dkim_private_key is not None:
            return self.dkim_private_key.get_secret_value().encode()
        if self.dkim_private_key_file is not None:
            return self.dkim_private_key_file.read_bytes()
        return None

    @property
    def sender_address(self) -> Address:
        display_name, address = parseaddr(self.sender)
        username, _, domain = address.rpartition("@")
        return Address(display_name=display_name, username=username, domain=domain)

    def resolved_secret_key(self) -> str:
        """The configured key, or one generated once and kept in the data directory."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.data_dir / SECRET_KEY_FILE
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        path.touch(mode=0o600)
        path.write_text(key)
        return key

    def check_production(self) -> None:
        """Refuse to run in production with secrets or URLs that only suit a laptop."""
        if self.env != "production":
            return
        problems = []
        if self.secret_key is None or len(self.secret_key.get_secret_value()) < 32:
            problems.append("NEWSLETTER_SECRET_KEY must be set to at least 32 random characters")
        if not self.base_url.startswith("https://"):
            problems.append("NEWSLETTER_BASE_URL must be an https:// URL")
        if self.database_url is None:
            problems.append("DATABASE_URL must be set (the embedded database is for development)")
        if problems:
            raise ConfigError("production mode refuses to start: " + "; ".join(problems))

    def redacted(self) -> dict[str, Any]:
        """The effective configuration with every secret hidden, for `newsletter config check`."""
        values = self.model_dump()
        values["database_url"] = (
            redact_url(self.database_url.get_secret_value()) if self.database_url else "embedded"
        )
        values["email_url"] = self.email.redacted()
        values["secret_key"] = "***" if self.secret_key else "(generated, kept in the data directory)"
        values["dkim_private_key"] = "***" if self.dkim_private_key else None
        values["postmark_webhook_password"] = "***" if self.postmark_webhook_password else None
        values["ses_topic_arns"] = sorted(self.ses_topic_arns)
        values["allowed_origins"] = list(self.allowed_origins)
        values["data_dir"] = str(self.data_dir)
        return values


_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origin(raw: str) -> str:
    """A web origin as a browser sends it in `Origin` (lowercase scheme and host, no default port), from
    `scheme://host[:port]`; ConfigError naming NEWSLETTER_ALLOWED_ORIGINS for anything else."""
    text = raw.strip()

    def refused(why: str) -> ConfigError:
        return ConfigError(f"NEWSLETTER_ALLOWED_ORIGINS: {text!r} is not an origin: {why}")

    if text == "*":
        raise refused("name each origin allowed (a wildcard would let every site sign people up)")
    parts = urlsplit(text)
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.netloc:
        raise refused("write scheme://host[:port], such as https://www.example.com")
    if parts.path or parts.query or parts.fragment or text.endswith(("?", "#")):
        raise refused("an origin has no path, query or fragment (write scheme://host[:port] only)")
    if parts.username is not None or parts.password is not None or not parts.hostname:
        raise refused("write scheme://host[:port], with no user name or password")
    if not parts.hostname.isascii():
        raise refused("write the host name in its ASCII (punycode) form, as browsers send it")
    try:
        port = parts.port
    except ValueError:
        raise refused("the port is not a number from 0 to 65535") from None
    scheme = parts.scheme.lower()
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname.lower()
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
