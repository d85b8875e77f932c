"""What every admin page shares: the signed-in user, CSRF tokens, one-time notices, and rendering.

Every admin route depends on `signed_in`: without a live session a GET is sent to the login page (303) and
anything else too, and a POST whose `csrf_token` field is not the one bound to the session is refused (403).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from newsletter.config import Settings
from newsletter.db.database import Database
from newsletter.services.access.accounts import AdminUser, session_user
from newsletter.services.errors import NotFound
from newsletter.templating import environment
from newsletter.web.state import context

SESSION_COOKIE = "nl_session"
LOGIN_COOKIE = "nl_login"
NOTICE_COOKIE = "nl_notice"
# Set on a successful login: this browser has logged in to this account before (see auth._failure_limits).
DEVICE_COOKIE = "nl_device"
DEVICE_COOKIE_SECONDS = 365 * 24 * 3600
COOKIE_PATH = "/admin"
CSRF_FIELD = "csrf_token"

# Admin pages load their own script and stylesheet and nothing else; the issue preview is a frame of ours.
ADMIN_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": ADMIN_POLICY,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class LoginRequired(Exception):
    def __init__(self, next_url: str | None) -> None:
        super().__init__("login required")
        self.next_url = next_url


class CsrfRejected(Exception):
    pass


def _mac(request: Request, purpose: bytes, value: str) -> str:
    digest = hmac.new(context(request).secret_key, purpose + b":" + value.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_token(request: Request, session_id: str) -> str:
    """Bound to the session: a token read from one session's page is worth nothing in another."""
    return _mac(request, b"admin-csrf", session_id)


def login_csrf_token(request: Request, login_nonce: str) -> str:
    return _mac(request, b"admin-login-csrf", login_nonce)


def device_cookie(request: Request, account: str) -> str:
    """A device cookie for an account: a random id of this browser, signed together with the account."""
    device = secrets.token_urlsafe(16)
    return f"{device}.{_mac(request, b'admin-device', f'{account.strip().lower()}:{device}')}"


def trusted_device(request: Request, account: str) -> str | None:
    """The id of this browser when its device cookie was issued for `account` (by a login to it), or None."""
    device, _, mac = request.cookies.get(DEVICE_COOKIE, "").partition(".")
    if not device or not tokens_match(mac, _mac(request, b"admin-device", f"{account}:{device}")):
        return None
    return device


def tokens_match(given: object, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def safe_next(raw: str | None) -> str:
    """Only a path inside the admin interface: a login link must not send anyone elsewhere."""
    if not raw:
        return "/admin"
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not parts.path.startswith("/admin") or raw.startswith("//"):
        return "/admin"
    if "\\" in raw or any(ord(char) < 0x20 for char in raw):
        return "/admin"
    return raw


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=context(request).settings.base_url.startswith("https://"),
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(
        name,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=context(request).settings.base_url.startswith("https://"),
    )


def _signed_notice(request: Request, kind: str, message: str) -> str:
    payload = base64.urlsafe_b64encode(json.dumps([kind, message]).encode()).rstrip(b"=").decode()
    return f"{payload}.{_mac(request, b'admin-notice', payload)}"


def _read_notice(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(NOTICE_COOKIE, "")
    payload, _, mac = raw.partition(".")
    if not payload or not tokens_match(mac, _mac(request, b"admin-notice", payload)):
        return None
    kind, message = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {"kind": kind, "message": message}


def render_page(
    request: Request,
    template: str,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    notice = _read_notice(request)
    html = environment().get_template(f"admin/{template}.html").render(notice=notice, **context)
    response = HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})
    if notice is not None:
        clear_cookie(response, request, NOTICE_COOKIE)
    return response


@dataclass(frozen=True, slots=True)
class Admin:
    """The signed-in user of this request, with what their pages need."""

    request: Request
    user: AdminUser
    session_id: str

    @property
    def db(self) -> Database:
        return context(self.request).db

    @property
    def settings(self) -> Settings:
        return context(self.request).settings

    @property
    def csrf_token(self) -> str:
        return csrf_token(self.request, self.session_id)

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return render_page(
            self.request,
            template,
            status,
            user=self.user,
            csrf_token=self.csrf_token,
            path=self.request.url.path,
            **context,
        )

    def redirect(self, url: str, notice: str | None = None, *, error: bool = False) -> RedirectResponse:
        """Post/redirect/get: the next page shows `notice` once."""
        response = RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
        if notice is not None:
            value = _signed_notice(self.request, "error" if error else "notice", notice)
            set_cookie(response, self.request, NOTICE_COOKIE, value, None)
        return response

    async def form(self) -> dict[str, str]:
        """The text fields of the posted form (already read, and its CSRF token checked, by `signed_in`)."""
        form = await self.request.form()
        return {key: value for key, value in form.items() if isinstance(value, str)}


async def signed_in(request: Request) -> Admin:
    session_id = request.cookies.get(SESSION_COOKIE, "")
    user = await session_user(context(request).db, session_id) if session_id else None
    if user is None:
        wants_page = request.method in ("GET", "HEAD")
        next_url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(next_url if wants_page else None)
    if request.method not in ("GET", "HEAD"):
        form = await request.form()
        if not tokens_match(form.get(CSRF_FIELD), csrf_token(request, session_id)):
            raise CsrfRejected
    return Admin(request, user, session_id)


SignedIn = Annotated[Admin, Depends(signed_in)]


def login_redirect(error: LoginRequired) -> RedirectResponse:
    target = "/admin/login"
    if error.next_url and error.next_url not in ("/admin", "/admin/"):
        target += "?" + urlencode({"next": error.next_url})
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})


def not_found(request: Request, error: NotFound) -> HTMLResponse:
    """The page for what a link names and does not exist (a service's NotFound, for every admin page)."""
    message = str(error)
    return render_page(
        request, "error", 404, title="Not found", message=message[:1].upper() + message[1:] + "."
    )


def csrf_rejected(request: Request) -> HTMLResponse:
    return render_page(
        request,
        "error",
        403,
        title="Form expired",
        message="This form could not be accepted: its security token is missing or belongs to another "
        "session. Go back, reload the page and try again.",
    )
