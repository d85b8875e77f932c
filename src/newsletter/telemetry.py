"""Logs and metrics: JSON log events (human-readable on a terminal) and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram

_SECRET_KEYS = ("password", "secret", "token", "authorization", "cookie", "database_url", "email_url")

HTTP_REQUESTS = Counter(
    "newsletter_http_requests_total", "HTTP requests answered.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "newsletter_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DELIVERIES = Counter(
    "newsletter_deliveries_total", "Delivery attempts settled, by kind and outcome.", ["kind", "status"]
)
DELIVERY_RETRIES = Counter("newsletter_delivery_retries_total", "Deliveries scheduled for another attempt.")
TRANSPORT_ERRORS = Counter(
    "newsletter_transport_errors_total", "Failed sends, by whether the failure is permanent.", ["permanent"]
)
SEND_LATENCY = Histogram(
    "newsletter_send_batch_duration_seconds",
    "Time for the transport to send one claimed batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE_DEPTH = Gauge("newsletter_queue_depth", "Deliveries waiting to be sent.")
QUEUE_OLDEST_AGE = Gauge("newsletter_queue_oldest_age_seconds", "Age of the oldest delivery waiting.")
EVENTS_WRITTEN = Gauge(
    "newsletter_events_written", "Events written to the event record so far (its last id), by every process."
)
SEQUENCE_STEPS_QUEUED = Counter(
    "newsletter_sequence_steps_queued_total",
    "Sequence steps turned into deliveries by the sweep (their emails are counted in deliveries_total).",
)
WEBHOOK_ATTEMPTS = Counter(
    "newsletter_webhook_attempts_total",
    "Webhook requests settled: delivered, failed for good, or retried later.",
    ["outcome"],
)
WEBHOOK_OLDEST_WAITING = Gauge(
    "newsletter_webhook_oldest_waiting_seconds",
    "Age of the oldest event not yet delivered to each active endpoint (0: nothing waits).",
    ["endpoint"],
)
SIGNUP_CHALLENGES = Counter(
    "newsletter_signup_challenges_total",
    "Sign-up proof-of-work challenges issued, verified, and refused (by why: unreadable, wrong, expired, "
    "replayed).",
    ["outcome"],
)
SIGNUP_MAIL_DOMAINS = Counter(
    "newsletter_signup_mail_domain_checks_total",
    "MX checks of a sign-up's domain: accepted, refused (no mail host), or unknown (DNS failed; accepted).",
    ["outcome"],
)
# The sign-up funnel (SPEC section 13), counted by the process where each sign-up and confirmation happens:
# nothing to read from the database, a series per list (lists are few and made by the operator, and only a
# list that exists is counted), and Prometheus adds up the processes and reads a restart as one (`rate()`).
# The dashboard reads its funnel from the database instead (every process, every day, and the people an
# operator adds through the API, which are not public sign-ups).
SIGNUPS = Counter(
    "newsletter_signups_total",
    "Subscriptions asked for on the public sign-up endpoint (form, JSON, embedded form), by list.",
    ["list"],
)
CONFIRMATIONS = Counter(
    "newsletter_confirmations_total",
    "Subscriptions confirmed by their confirmation link, or at once on a single opt-in list, by list.",
    ["list"],
)
LEASES_RECLAIMED = Counter(
    "newsletter_leases_reclaimed_total", "Deliveries taken back from a worker whose lease expired."
)


def _redact_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    event.pop("color_message", None)
    for key in event:
        if any(marker in key.lower() for marker in _SECRET_KEYS):
            event[key] = "***"
    return event


class _StandardError:
    """Writes each event to whatever `sys.stderr` is at that moment (tests swap it)."""

    def msg(self, message: str) -> None:
        sys.stderr.write(message + "\n")

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


class _StandardErrorHandler(logging.StreamHandler):  # type: ignore[type-arg]
    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """One event per line: JSON for machines, coloured key=value on a terminal.

    Our own events go straight from structlog to stderr, which is several times cheaper per event than the
    standard `logging` machinery; what libraries log through `logging` is rendered the same way.
    """
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer(colors=True)
    )
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        logger_factory=lambda *_: _StandardError(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        cache_logger_on_first_use=True,
    )
    handler = _StandardErrorHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # Requests are logged once, by our own middleware.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request's full URL at INFO: the email API transport logs its own outcomes instead,
    # and a URL may carry a token.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
