"""The public pages and endpoints: sign-up, confirmation, health and metrics."""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile

from newsletter.config import Settings
from newsletter.domain.subscriber import InvalidInput, ListSlug, SubscriberEmail, SubscriberName
from newsletter.domain.tokens import UnsubscribeToken
from newsletter.services.access import challenges, ratelimit
from newsletter.services.access.challenges import ChallengeRefused
from newsletter.services.access.mail_domains import NO_MAIL_HOST
from newsletter.services.access.ratelimit import RateLimited
from newsletter.services.audience import subscriptions
from newsletter.services.audience.subscriptions import (
    Confirmation,
    Evidence,
    SignupLimits,
    SubscriptionRequest,
)
from newsletter.services.compliance import unsubscribe
from newsletter.templating import environment
from newsletter.web.middleware import CONTENT_SECURITY_POLICY
from newsletter.web.problems import problem
from newsletter.web.state import context

router = APIRouter()

ACCEPTED_DETAIL = (
    "If this address can be subscribed, a confirmation email is on its way. Please check your inbox."
)
HONEYPOT_FIELD = "website"
# The proof-of-work solution (NEWSLETTER_SIGNUP_CHALLENGE=pow), named as the ALTCHA widget names it.
CHALLENGE_FIELD = "altcha"
_FIELDS = ("email", "name", "list", HONEYPOT_FIELD, CHALLENGE_FIELD)
# The form that solves a challenge runs its one script and fetches the challenge from here; nothing else.
_CHALLENGE_HEADERS = {
    "Content-Security-Policy": f"{CONTENT_SECURITY_POLICY}; script-src 'self'; connect-src 'self'",
    "X-Frame-Options": "DENY",
}


class BadRequest(Exception):
    """The body could not be read at all (wrong type, broken encoding); answered with 400 or 415."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class FieldErrors(Exception):
    """Fields that were read but are not acceptable; answered with 422 and a message per field."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("invalid fields")
        self.errors = errors


def _limits(settings: Settings) -> SignupLimits:
    return SignupLimits(
        per_ip=settings.signup_ip_limit,
        ip_window_seconds=settings.signup_ip_window_seconds,
        per_address=settings.signup_address_limit,
        address_window_seconds=settings.signup_address_window_seconds,
    )


def _evidence(request: Request, source: str) -> Evidence:
    return Evidence(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        source=source,
    )


def page(name: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    html = environment().get_template(f"pages/{name}.html").render(context)
    return HTMLResponse(html, status_code=status, headers=headers)


def _is_form(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type in ("application/x-www-form-urlencoded", "multipart/form-data")


async def read_fields(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    """The named string fields of a form or JSON body; anything unreadable raises BadRequest."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        body = await request.body()
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise BadRequest(400, "The request body is not valid UTF-8.") from None
        values: dict[str, str] = dict(pairs)
    elif content_type == "multipart/form-data":
        form = await request.form(max_files=0, max_fields=20)
        values = {}
        for key, item in form.multi_items():
            if isinstance(item, UploadFile):
                raise BadRequest(400, "Files are not accepted here.")
            values[key] = item
    elif content_type == "application/json" or content_type.endswith("+json"):
        body = await request.body()
        try:
            document = json.loads(body)
        except UnicodeDecodeError:
            raise BadRequest(400, "The request body is not valid UTF-8.") from None
        except (ValueError, RecursionError):  # nested too deep to parse: `[[[[...`
            raise BadRequest(400, "The request body is not valid JSON.") from None
        if not isinstance(document, dict):
            raise BadRequest(400, "The request body must be a JSON object.")
        values = {}
        for key in names:
            field = document.get(key)
            if field is not None and not isinstance(field, str):
                raise FieldErrors({key: "must be a string"})
            if field is not None:
                values[key] = field
    else:
        raise BadRequest(415, "Send the form as application/x-www-form-urlencoded or JSON.")
    return {key: values[key] for key in names if key in values}


def parse_subscription(fields: dict[str, str]) -> SubscriptionRequest:
    errors: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    for key, parser in (("email", SubscriberEmail), ("name", SubscriberName), ("list", ListSlug)):
        raw = fields.get(key, "default" if key == "list" else "")
        try:
            parsed[key] = parser.parse(raw)
        except InvalidInput as error:
            errors[key] = str(error)
    if errors:
        raise FieldErrors(errors)
    return SubscriptionRequest(email=parsed["email"], name=parsed["name"], list_slug=parsed["list"])


async def signup_form(
    request: Request,
    list_slug: str,
    status: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
) -> HTMLResponse:
    """The sign-up form of a public list, naming it; an unknown or private list's page is not found. A form
    posted back with its errors is shown, when its list is not found, as the default list's form."""
    errors = dict(errors or {})
    found = await subscriptions.public_list(context(request).db, list_slug)
    if found is None and status != 200:
        errors["list"] = "Unknown list."
        found = await subscriptions.public_list(context(request).db, "default")
    if found is None:
        return page("list_not_found", 404 if status == 200 else status)
    if context(request).settings.signup_challenge == "pow":
        return page(
            "signup",
            status,
            _CHALLENGE_HEADERS,
            signup_list=found,
            values=values or {},
            errors=errors,
            challenge=True,
        )
    return page("signup", status, signup_list=found, values=values or {}, errors=errors, challenge=False)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def signup_page(request: Request, list: str = "default") -> HTMLResponse:
    return await signup_form(request, list)


_SUBSCRIBE_BODY = {
    "type": "object",
    "required": ["email"],
    "properties": {
        "email": {"type": "string", "maxLength": 254, "example": "ada@example.com"},
        "name": {"type": "string", "maxLength": 256, "example": "Ada Lovelace"},
        "list": {"type": "string", "description": "list slug", "default": "default"},
        CHALLENGE_FIELD: {
            "type": "string",
            "description": "With NEWSLETTER_SIGNUP_CHALLENGE=pow: the solution of a challenge from "
            "GET /subscriptions/challenge (base64 of the ALTCHA payload JSON)",
        },
    },
}


@router.get(
    "/subscriptions/challenge",
    summary="A proof-of-work challenge for a sign-up (ALTCHA)",
    responses={
        200: {
            "description": "Find `number` in 0..maxnumber whose SHA-256 of salt + number is `challenge`; "
            "send base64 of {algorithm, challenge, number, salt, signature} as `altcha` with the sign-up. "
            "Each challenge expires (see `expires` in the salt) and is accepted once.",
            "content": {
                "application/json": {
                    "example": {
                        "algorithm": "SHA-256",
                        "challenge": "4f8a...e1",
                        "maxnumber": 50000,
                        "salt": "1b2c3d4e5f60718293a4b5c6?expires=1767225600&",
                        "signature": "9c0d...7a",
                    }
                }
            },
        }
    },
)
async def signup_challenge(request: Request) -> JSONResponse:
    settings = context(request).settings
    issued = challenges.issue(
        challenges.challenge_key(context(request).secret_key),
        settings.signup_challenge_max_number,
        settings.signup_challenge_ttl_seconds,
    )
    return JSONResponse(issued, headers={"Cache-Control": "no-store"})


@router.post(
    "/subscriptions",
    status_code=202,
    summary="Ask to subscribe (double opt-in)",
    responses={
        202: {"description": "Accepted; the same answer whether the address is new, pending or confirmed"},
        422: {
            "description": "Invalid or missing fields, a missing, wrong, expired or spent proof of work, or "
            "(with the MX check on) a domain that receives no mail (problem+json)"
        },
        429: {"description": "Too many sign-ups from this address or network; see Retry-After"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _SUBSCRIBE_BODY},
                "application/x-www-form-urlencoded": {"schema": _SUBSCRIBE_BODY},
            },
        }
    },
)
async def subscribe(request: Request) -> Response:
    is_form = _is_form(request)
    fields: dict[str, str] = {}
    try:
        fields = await read_fields(request, _FIELDS)
        subscription = parse_subscription(fields)
    except BadRequest as error:
        return problem(error.status, "Bad request", error.detail)
    except FieldErrors as error:
        return await _invalid(request, is_form, fields, error.errors)
    settings = context(request).settings
    if settings.signup_challenge == "pow":
        try:
            await challenges.redeem(
                context(request).db,
                challenges.challenge_key(context(request).secret_key),
                fields.get(CHALLENGE_FIELD, ""),
            )
        except ChallengeRefused as refused:
            return await _invalid(request, is_form, fields, {CHALLENGE_FIELD: refused.message})
    if fields.get(HONEYPOT_FIELD):
        # A bot filled the field people cannot see: answer as usual and do nothing.
        return _accepted(is_form)
    mail_domains = context(request).mail_domains
    if mail_domains is not None and not await mail_domains.accepts(subscription.email):
        return await _invalid(request, is_form, fields, {"email": NO_MAIL_HOST})
    try:
        await subscriptions.subscribe(
            context(request).db,
            subscription,
            _evidence(request, "form" if is_form else "api"),
            _limits(settings),
            request.state.request_id,
            context(request).waker,
        )
    except subscriptions.UnknownList:
        if is_form:
            return await signup_form(request, fields.get("list", "default"), 422, fields)
        return problem(
            422,
            "Invalid subscription request",
            "list: Unknown list.",
            errors=[{"field": "list", "message": "Unknown list."}],
        )
    except RateLimited as limited:
        return _too_many(is_form, limited.retry_after)
    return _accepted(is_form)


async def _invalid(
    request: Request, is_form: bool, fields: dict[str, str], errors: dict[str, str]
) -> Response:
    """422: the form again with its errors, or the problem naming each field."""
    if is_form:
        return await signup_form(request, fields.get("list", "default"), 422, fields, errors)
    return problem(
        422,
        "Invalid subscription request",
        "; ".join(f"{key}: {message}" for key, message in errors.items()),
        errors=[{"field": key, "message": message} for key, message in errors.items()],
    )


def _accepted(is_form: bool) -> Response:
    if is_form:
        return page("signup_done", 202)
    return JSONResponse({"status": "accepted", "detail": ACCEPTED_DETAIL}, status_code=202)


def _too_many(is_form: bool, retry_after: int) -> Response:
    headers = {"Retry-After": str(retry_after)}
    if is_form:
        return page("rate_limited", 429, headers=headers, retry_after=retry_after)
    return problem(429, "Too many requests", f"Please try again in {retry_after} seconds.", headers=headers)


_GUESSING: dict[int | str, dict[str, Any]] = {
    429: {"description": "Too many wrong tokens from this network address; see Retry-After"}
}


def _guess_limits(request: Request) -> list[ratelimit.Limit]:
    """Wrong confirmation and unsubscribe tokens, counted per network address."""
    settings = context(request).settings
    client = request.client.host if request.client else None
    return ratelimit.wrong_guesses(
        "token-guess", client, settings.token_guess_limit, settings.token_guess_window_seconds
    )


async def _guessing_refused(request: Request) -> Response | None:
    """A 429 page for an address that presented too many wrong tokens lately; checked before the token is,
    so that a right guess is then answered exactly as a wrong one."""
    try:
        await ratelimit.refuse_if_exceeded(context(request).db, _guess_limits(request))
    except RateLimited as limited:
        return _too_many(True, limited.retry_after)
    return None


async def _wrong_token(request: Request) -> HTMLResponse:
    """The 404 page for a token that names nothing, counted against the address that sent it."""
    with contextlib.suppress(RateLimited):  # this answer stays 404; the next request is refused
        await ratelimit.hit(context(request).db, _guess_limits(request))
    return page("not_found", 404)


@router.get(
    "/subscriptions/confirm",
    response_class=HTMLResponse,
    summary="The confirmation page",
    responses=_GUESSING,
)
async def confirmation_page(request: Request, token: str = "") -> Response:
    if refused := await _guessing_refused(request):
        return refused
    result = await subscriptions.inspect_token(context(request).db, token)
    if result.outcome is Confirmation.UNKNOWN:
        return await _wrong_token(request)
    return _confirmation_response(result, token, pending_page="confirm")


@router.post(
    "/subscriptions/confirm",
    response_class=HTMLResponse,
    summary="Confirm a subscription",
    responses=_GUESSING,
)
async def confirm(request: Request) -> Response:
    if refused := await _guessing_refused(request):
        return refused
    try:
        fields = await read_fields(request, ("token",))
    except (BadRequest, FieldErrors):
        return await _wrong_token(request)
    token = fields.get("token", "")
    result = await subscriptions.confirm(context(request).db, token, _evidence(request, "form"))
    if result.outcome is Confirmation.UNKNOWN:
        return await _wrong_token(request)
    return _confirmation_response(result, token, pending_page="confirmed")


def _confirmation_response(
    result: subscriptions.ConfirmationResult, token: str, *, pending_page: str
) -> HTMLResponse:
    if result.outcome is Confirmation.EXPIRED:
        return page("confirm_expired", 410, token=token, list_name=result.list_name)
    if result.outcome is Confirmation.ALREADY_CONFIRMED:
        return page("confirmed", list_name=result.list_name)
    return page(pending_page, token=token, list_name=result.list_name)


@router.post("/subscriptions/confirm/resend", response_class=HTMLResponse, summary="Ask for a new link")
async def resend_confirmation(request: Request) -> Response:
    try:
        fields = await read_fields(request, ("token",))
    except (BadRequest, FieldErrors):
        return page("not_found", 404)
    try:
        await subscriptions.resend_confirmation(
            context(request).db,
            fields.get("token", ""),
            _limits(context(request).settings),
            _evidence(request, "form"),
            request.state.request_id,
        )
    except RateLimited as limited:
        return _too_many(True, limited.retry_after)
    return page("signup_done", 202)


def _unsubscribe_token(request: Request, raw: str) -> UnsubscribeToken | None:
    return UnsubscribeToken.verify(context(request).secret_key, raw)


@router.get(
    "/unsubscribe/{token}", response_class=HTMLResponse, summary="The unsubscribe page", responses=_GUESSING
)
async def unsubscribe_page(request: Request, token: str) -> Response:
    """Shows the buttons and the person's lists; changes nothing (link scanners fetch every GET)."""
    if refused := await _guessing_refused(request):
        return refused
    parsed = _unsubscribe_token(request, token)
    if parsed is None:
        return await _wrong_token(request)
    found = await unsubscribe.preferences(context(request).db, parsed)
    if found is None:
        return page("not_found", 404)
    return page("unsubscribe", token=token, preferences=found, done=False)


@router.post(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    summary="Unsubscribe (RFC 8058 one-click: body List-Unsubscribe=One-Click)",
    responses=_GUESSING,
)
async def unsubscribe_now(request: Request, token: str) -> Response:
    """One-click clients send `List-Unsubscribe=One-Click` with no cookie; the page's own form may send
    `scope=all`. Whatever the body, a POST with a valid token unsubscribes, and never redirects."""
    if refused := await _guessing_refused(request):
        return refused
    parsed = _unsubscribe_token(request, token)
    if parsed is None:
        return await _wrong_token(request)
    try:
        fields = await read_fields(request, ("scope",))
    except (BadRequest, FieldErrors):
        fields = {}
    found = await unsubscribe.unsubscribe(
        context(request).db, parsed, everything=fields.get("scope") == "all"
    )
    if found is None:
        return page("not_found", 404)
    return page("unsubscribe", token=token, preferences=found, done=True)


@router.get("/health/live", summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/health/ready", summary="The database answers", responses={503: {"description": "Database down"}}
)
async def ready(request: Request) -> Response:
    try:
        await context(request).db.pool.fetchval("SELECT 1", timeout=2)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
        return problem(503, "Not ready", f"The database is unreachable: {type(error).__name__}")
    return JSONResponse({"status": "ok"})


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
