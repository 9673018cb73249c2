"""What every console response carries, and the CSRF check on the console's one write.

Headers: a strict Content-Security-Policy (scripts, styles and connections from this origin
only, no inline code, never framed), `X-Frame-Options: DENY` for older browsers, no caching
of pages that show user data, no referrer to other sites.

CSRF: a random token in a `SameSite=Strict` cookie, repeated by the page in a form field or
the `X-CSRF-Token` header (double submit); a POST must carry both, equal, and must not come
from another site (`Origin`, `Sec-Fetch-Site`). Another site can neither read the cookie nor
make the browser send it.
"""

from __future__ import annotations

import hmac
import secrets
from typing import cast
from urllib.parse import parse_qsl

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_COOKIE = "ddg_console_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
MAX_FORM_BYTES = 8192

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)

SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # Not no-referrer: with it Chromium sends `Origin: null` on the console's own form posts.
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


class SecurityHeaders:
    """Adds SECURITY_HEADERS (and `Cache-Control: no-store` outside /static) to responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = "/static/" in scope["path"]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if not static:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, with_headers)


def csrf_token(request: Request) -> tuple[str, bool]:
    """The browser's CSRF token, and whether it is new (then the response must set it)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if len(current) == 43 and current.replace("-", "").replace("_", "").isalnum():
        return current, False
    return secrets.token_urlsafe(32), True


def set_csrf_cookie(response_headers: MutableHeaders, token: str, secure: bool) -> None:
    cookie = f"{CSRF_COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict"
    response_headers.append("set-cookie", cookie + ("; Secure" if secure else ""))


async def csrf_problem(request: Request) -> str | None:
    """Why this unsafe request must be refused, or None when it passes."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return "cross-site request"
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        expected = f"{request.url.scheme}://{request.url.netloc}"
        if origin != expected:
            return "origin does not match"
    elif origin == "null":
        return "opaque origin"
    cookie = request.cookies.get(CSRF_COOKIE, "")
    presented = request.headers.get(CSRF_HEADER)
    if presented is None:
        presented = (await form_fields(request)).get(CSRF_FIELD, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), presented.encode()):
        return "missing or wrong CSRF token"
    return None


async def form_fields(request: Request) -> dict[str, str]:
    """A small url-encoded form's fields (the first of a repeated one), read once per request.
    Parsed here so the console needs no multipart library for its three tiny forms."""
    cached = request.scope.get("console_form")
    if cached is not None:
        return cast(dict[str, str], cached)
    fields: dict[str, str] = {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                body = b""
                break
        for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            fields.setdefault(name, value)
    request.scope["console_form"] = fields
    return fields
