"""Provider webhooks: bounces and complaints from Amazon SES (through SNS), SendGrid and Postmark.

Every request is authenticated before its content is used; one that is not gets a 4xx and changes nothing.
Providers retry until they get a 2xx, so each event is applied once however often it comes.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from newsletter.inbound.providers import Rejected, Unavailable, postmark, sendgrid
from newsletter.inbound.providers.ses import ses_events
from newsletter.services.access import ratelimit
from newsletter.services.compliance.reports import BounceRules, DeliveryEvent, apply_events
from newsletter.web.problems import problem
from newsletter.web.state import context

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden"}


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise Rejected(400, "The body is not JSON.") from None


async def _apply(request: Request, read: Callable[[], Awaitable[list[DeliveryEvent]]]) -> Response:
    try:
        events = await read()
    except Rejected as error:
        log.warning("webhook rejected", path=request.url.path, status=error.status, reason=error.detail)
        return problem(error.status, TITLES[error.status], error.detail)
    except Unavailable as error:
        log.warning("webhook cannot be verified now", path=request.url.path, error=str(error))
        return problem(
            503,
            "Service unavailable",
            "The message cannot be verified right now.",
            headers={"Retry-After": "60"},
        )
    applied = await apply_events(
        context(request).db, events, BounceRules.from_settings(context(request).settings)
    )
    return JSONResponse({"received": applied.received, "recorded": applied.recorded})


@router.post("/ses", summary="Amazon SES bounces and complaints, delivered by Amazon SNS")
async def ses_webhook(request: Request) -> Response:
    async def read() -> list[DeliveryEvent]:
        sns = context(request).sns
        message = await sns.verify(
            _parse_json(await request.body()), context(request).settings.ses_topic_arns
        )
        if message.type == "SubscriptionConfirmation":
            await sns.confirm(message)
            log.info("SNS subscription confirmed", topic=message.topic_arn)
        if message.type != "Notification":
            return []
        return ses_events(message.message, context(request).secret_key)

    return await _apply(request, read)


@router.post("/sendgrid", summary="SendGrid's signed event webhook")
async def sendgrid_webhook(request: Request) -> Response:
    async def read() -> list[DeliveryEvent]:
        body = await request.body()
        sendgrid.verify(
            context(request).settings.sendgrid_public_key,
            request.headers.get(SENDGRID_SIGNATURE),
            request.headers.get(SENDGRID_TIMESTAMP),
            body,
            now=time.time(),
        )
        return sendgrid.sendgrid_events(_parse_json(body))

    return await _apply(request, read)


def _credential_guesses(request: Request) -> list[ratelimit.Limit]:
    """Wrong webhook credentials, counted per network address as wrong confirmation tokens are."""
    settings = context(request).settings
    client = request.client.host if request.client else None
    return ratelimit.wrong_guesses(
        "webhook-credentials", client, settings.token_guess_limit, settings.token_guess_window_seconds
    )


@router.post(
    "/postmark",
    summary="Postmark bounce and spam complaint webhooks (basic auth)",
    responses={429: {"description": "Too many wrong credentials from this network address; see Retry-After"}},
)
async def postmark_webhook(request: Request) -> Response:
    settings = context(request).settings
    password = settings.postmark_webhook_password
    db = context(request).db
    guesses = _credential_guesses(request)
    try:
        # Checked first: once refused, right credentials are answered as wrong ones are.
        await ratelimit.refuse_if_exceeded(db, guesses)
    except ratelimit.RateLimited as limited:
        return problem(
            429,
            "Too many requests",
            f"Too many wrong credentials; try again in {limited.retry_after} seconds.",
            headers={"Retry-After": str(limited.retry_after)},
        )
    if not postmark.authorized(
        request.headers.get("Authorization"),
        settings.postmark_webhook_user,
        password.get_secret_value() if password is not None else None,
    ):
        with contextlib.suppress(ratelimit.RateLimited):  # this answer stays 401; the next is refused
            await ratelimit.hit(db, guesses)
        return problem(
            401,
            "Unauthorized",
            "Put the configured user and password in the webhook URL.",
            headers={"WWW-Authenticate": 'Basic realm="webhooks"'},
        )

    async def read() -> list[DeliveryEvent]:
        return postmark.postmark_events(_parse_json(await request.body()))

    return await _apply(request, read)
