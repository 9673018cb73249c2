"""Who may open the console: an admin credential, or (development only) anyone on localhost.

Accepted, in order:

- `Authorization: Bearer <CONSOLE_TOKEN>` (what `datadiver-graph logs` sends);
- the console's own cookie, set by `/console/login` for a browser that gave the token: an
  HMAC of the token, so changing the token signs every browser out;
- a Clerk session token (`Authorization: Bearer` or Clerk's `__session` cookie) whose user is
  in CONSOLE_ADMIN_USER_IDS;
- in development with neither credential configured, a request from a loopback address to a
  loopback host name (the host check keeps a DNS-rebound page from reading it).

A service key is never looked at, and an ordinary user's token is refused like any other
wrong credential. Every refusal is logged (without the credential).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from datadiver_graph.auth.identity import AuthError, TokenVerifier
from datadiver_graph.config import Settings

log = logging.getLogger("datadiver_graph.console")

SESSION_COOKIE = "ddg_console"
CLERK_COOKIE = "__session"
_SESSION_CONTEXT = b"datadiver-graph console session v1"
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


@dataclass(frozen=True, slots=True)
class Grant:
    """Why a request was let in: "token", "cookie", "admin:<user id>" or "localhost"."""

    via: str


class ConsoleAccess:
    def __init__(self, settings: Settings, verifier: TokenVerifier) -> None:
        secret = settings.console_token
        self._token = secret.get_secret_value().strip().encode() if secret is not None else None
        self._admins = frozenset(settings.console_admin_user_ids)
        self._verifier = verifier
        self.open_on_localhost = (
            not settings.is_production and self._token is None and not self._admins
        )

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def session_value(self) -> str | None:
        """The login cookie's value: derived from the token, never the token itself."""
        if self._token is None:
            return None
        return hmac.new(self._token, _SESSION_CONTEXT, hashlib.sha256).hexdigest()

    def token_matches(self, presented: str) -> bool:
        return self._token is not None and hmac.compare_digest(
            presented.strip().encode(), self._token
        )

    async def check(self, conn: HTTPConnection) -> Grant | None:
        """The grant, or None after logging the refusal."""
        grant, reason = await self._decide(conn)
        if grant is None:
            refused(conn, reason)
        return grant

    async def _decide(self, conn: HTTPConnection) -> tuple[Grant | None, str]:
        if self.open_on_localhost:
            if _from_loopback(conn):
                return Grant("localhost"), ""
            return None, "development console is open to localhost only"
        bearer = _bearer(conn)
        if bearer is not None:
            if self.token_matches(bearer):
                return Grant("token"), ""
            return await self._admin(bearer, "bearer token is not an admin credential")
        cookie = conn.cookies.get(SESSION_COOKIE)
        expected = self.session_value()
        if cookie and expected is not None and hmac.compare_digest(cookie, expected):
            return Grant("cookie"), ""
        clerk = conn.cookies.get(CLERK_COOKIE)
        if clerk and self._admins:
            return await self._admin(clerk, "session cookie is not an admin's")
        return None, "no admin credential"

    async def _admin(self, token: str, reason: str) -> tuple[Grant | None, str]:
        if not self._admins:
            return None, reason
        try:
            identity = await self._verifier.verify(token)
        except AuthError as exc:
            return None, f"{reason} ({exc})"
        if identity.user_id is not None and identity.user_id in self._admins:
            return Grant(f"admin:{identity.user_id}"), ""
        return None, reason


def refused(conn: HTTPConnection, reason: str) -> None:
    client = conn.client.host if conn.client else None
    log.warning(
        "console access refused: %s",
        reason,
        extra={
            "event": "console_refused",
            "reason": reason,
            "path": conn.url.path[:200],
            "client": client,
        },
    )


def _bearer(conn: HTTPConnection) -> str | None:
    scheme, _, token = conn.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _from_loopback(conn: HTTPConnection) -> bool:
    client = conn.client.host if conn.client else ""
    try:
        if not ipaddress.ip_address(client).is_loopback:
            return False
    except ValueError:
        return False
    host = conn.headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.lower() in _LOOPBACK_HOSTS
