"""Logging in and out, the password, and API tokens."""

from __future__ import annotations

import contextlib
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from newsletter.domain.subscriber import InvalidInput, SubscriberName
from newsletter.domain.vocabulary import TokenScope
from newsletter.services.access import accounts, ratelimit, tokens
from newsletter.services.errors import Invalid
from newsletter.web.admin.core import (
    DEVICE_COOKIE,
    DEVICE_COOKIE_SECONDS,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SignedIn,
    clear_cookie,
    csrf_rejected,
    device_cookie,
    login_csrf_token,
    render_page,
    safe_next,
    set_cookie,
    tokens_match,
    trusted_device,
)
from newsletter.web.api.common import Id
from newsletter.web.state import context

router = APIRouter()

LOGIN_FAILED = "The email address or the password is not right."


def _login_page(
    request: Request,
    nonce: str,
    *,
    next_url: str,
    email: str = "",
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    response = render_page(
        request,
        "login",
        status,
        csrf_token=login_csrf_token(request, nonce),
        next_url=next_url,
        email=email,
        error=error,
    )
    set_cookie(response, request, LOGIN_COOKIE, nonce, 3600)
    return response


@router.get("/admin/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str | None = None) -> Response:
    session_id = request.cookies.get(SESSION_COOKIE, "")
    if session_id and await accounts.session_user(context(request).db, session_id) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    return _login_page(request, nonce, next_url=safe_next(next))


@router.post("/admin/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await request.form()
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not tokens_match(form.get("csrf_token"), login_csrf_token(request, nonce)):
        return csrf_rejected(request)
    email = str(form.get("email", ""))[:320]
    password = str(form.get("password", ""))
    next_url = safe_next(str(form.get("next", "")))
    settings = context(request).settings
    db = context(request).db
    failures = _failure_limits(request, email)
    try:
        # Only failures count, and only against this client: another client's wrong passwords never keep
        # this one out. Checked before the password, so that once refused, a right one is answered alike.
        await ratelimit.refuse_if_exceeded(db, failures)
    except ratelimit.RateLimited as limited:
        minutes = max(1, round(limited.retry_after / 60))
        response = _login_page(
            request,
            nonce,
            next_url=next_url,
            email=email,
            error=f"Too many login attempts. Please try again in {minutes} min.",
            status=429,
        )
        response.headers["Retry-After"] = str(limited.retry_after)
        return response
    user = await accounts.authenticate(db, email, password)
    if user is None:
        with contextlib.suppress(ratelimit.RateLimited):  # this answer stays 401; the next is refused
            await ratelimit.hit(db, failures)
        return _login_page(request, nonce, next_url=next_url, email=email, error=LOGIN_FAILED, status=401)
    # Whatever session the browser brought along ends here: a login always starts a new one.
    await accounts.end_session(db, request.cookies.get(SESSION_COOKIE, ""))
    session_id = await accounts.start_session(
        db,
        user,
        lifetime_seconds=settings.admin_session_hours * 3600,
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    redirect = RedirectResponse(next_url, status_code=303, headers={"Cache-Control": "no-store"})
    set_cookie(redirect, request, SESSION_COOKIE, session_id, round(settings.admin_session_hours * 3600))
    set_cookie(redirect, request, DEVICE_COOKIE, device_cookie(request, user.email), DEVICE_COOKIE_SECONDS)
    clear_cookie(redirect, request, LOGIN_COOKIE)
    return redirect


def _failure_limits(request: Request, email: str) -> list[ratelimit.Limit]:
    """The counters of wrong passwords that a login attempt for `email` is held to.

    A browser that has logged in to this account before (its device cookie says so: OWASP's "device cookies")
    is counted on its own, so that wrong passwords tried from anywhere else, the same network included,
    never lock its user out. Any other client is counted by its network address: for this account, and
    across all accounts (a client trying many accounts).
    """
    settings = context(request).settings
    window = settings.admin_login_window_seconds
    account = email.strip().lower()
    device = trusted_device(request, account)
    if device is not None:
        return [
            ratelimit.Limit(
                f"admin-login:{account}:device:{device}", settings.admin_login_email_limit, window
            )
        ]
    ip = request.client.host if request.client else "unknown"
    return [
        ratelimit.Limit(f"admin-login:{account}:ip:{ip}", settings.admin_login_email_limit, window),
        ratelimit.Limit(f"admin-login:ip:{ip}", settings.admin_login_ip_limit, window),
    ]


@router.post("/admin/logout")
async def logout(admin: SignedIn) -> Response:
    await accounts.end_session(admin.db, admin.session_id)
    response: Response = admin.redirect("/admin/login", "You are logged out.")
    clear_cookie(response, admin.request, SESSION_COOKIE)
    return response


@router.get("/admin/password", response_class=HTMLResponse)
async def password_page(admin: SignedIn) -> Response:
    return admin.render("password", error=None)


@router.post("/admin/password", response_class=HTMLResponse)
async def change_password(admin: SignedIn) -> Response:
    form = await admin.form()
    try:
        await accounts.change_password(
            admin.db,
            admin.user,
            admin.session_id,
            form.get("current_password", ""),
            form.get("new_password", ""),
            form.get("confirm_password", ""),
        )
    except Invalid as error:
        return admin.render("password", 422, error=str(error))
    return admin.redirect("/admin/password", "Your password is changed; your other sessions have ended.")


@router.get("/admin/tokens", response_class=HTMLResponse)
async def tokens_page(admin: SignedIn) -> Response:
    return admin.render("tokens", tokens=await tokens.list_tokens(admin.db), created=None, error=None)


@router.post("/admin/tokens", response_class=HTMLResponse)
async def create_token(admin: SignedIn) -> Response:
    form = await admin.form()
    scope = form.get("scope", TokenScope.ADMIN)
    try:
        name = SubscriberName.parse(form.get("name", "")).value
        if not name or len(name) > 200:
            raise InvalidInput("Give the token a name of 1 to 200 characters.")
        if scope not in set(TokenScope):
            raise InvalidInput("The scope is admin or read.")
    except InvalidInput as error:
        listed = await tokens.list_tokens(admin.db)
        return admin.render("tokens", 422, tokens=listed, created=None, error=str(error))
    token = await tokens.create_token(admin.db, name, TokenScope(scope))
    listed = await tokens.list_tokens(admin.db)
    return admin.render("tokens", 201, tokens=listed, created={"name": name, "token": token}, error=None)


@router.post("/admin/tokens/{token_id}/revoke")
async def revoke_token(admin: SignedIn, token_id: Id) -> Response:
    if await tokens.revoke_token(admin.db, token_id):
        return admin.redirect("/admin/tokens", "The token is revoked.")
    return admin.redirect("/admin/tokens", "No such live token.", error=True)
