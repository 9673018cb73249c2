"""Signing keys for JWT verification: a remote JWKS cache and a fixed local key set.

Both expose `async get_key(kid) -> PyJWK`, which is all `TokenVerifier` needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

logger = logging.getLogger(__name__)

# The only (kty, crv) pairs we accept, and the single algorithm each one may verify.
# Binding the algorithm to the key (not the token header) is what defeats alg confusion.
_ALGORITHM_FOR_KEY: dict[tuple[str, str | None], str] = {
    ("RSA", None): "RS256",
    ("EC", "P-256"): "ES256",
}
SUPPORTED_ALGORITHMS = frozenset(_ALGORITHM_FOR_KEY.values())


class AuthError(Exception):
    """Authentication failed. The message is short and safe to show a client."""


class KeySource(Protocol):
    async def get_key(self, kid: str) -> PyJWK: ...


def usable_keys(jwks: object) -> dict[str, PyJWK]:
    """The RS256/ES256 signing keys of a JWKS document, by kid; anything else is skipped."""
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, PyJWK] = {}
    for entry in jwks["keys"]:
        if not isinstance(entry, dict):
            continue
        kid, kty = entry.get("kid"), entry.get("kty")
        if not isinstance(kid, str) or not isinstance(kty, str):
            continue
        crv = entry.get("crv") if kty == "EC" else None
        algorithm = _ALGORITHM_FOR_KEY.get((kty, crv))
        if algorithm is None:
            continue
        # A key that declares another alg or an encryption use must not verify our tokens.
        if entry.get("alg", algorithm) != algorithm or entry.get("use", "sig") != "sig":
            continue
        try:
            keys[kid] = PyJWK(entry, algorithm=algorithm)
        except PyJWTError:
            continue
    return keys


class StaticKeys:
    """A key set known up front (the development key): never fetched, never refreshed."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = usable_keys(jwks)

    async def get_key(self, kid: str) -> PyJWK:
        try:
            return self._keys[kid]
        except KeyError:
            raise AuthError("unknown signing key") from None


class JwksCache:
    """A remote JWKS, fetched with httpx and cached for `ttl_seconds`.

    An unknown kid forces one refresh (so key rotation is picked up at once), but at most one
    per `min_refresh_interval`, so tokens with made-up kids cannot turn us into a flood against
    the issuer. Concurrent callers share a single in-flight fetch. A failed fetch keeps the
    last good keys: an issuer outage must not log everybody out while their keys are still valid.
    `clock` (seconds, monotonic) is what the TTL and both intervals are measured on.
    """

    def __init__(
        self,
        url: str,
        ttl_seconds: float = 300.0,
        http_client: httpx.AsyncClient | None = None,
        *,
        min_refresh_interval: float = 10.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.ttl_seconds = ttl_seconds
        self.min_refresh_interval = min_refresh_interval
        self._timeout = timeout
        self._client = http_client
        self._clock = clock
        self._owns_client = http_client is None
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._last_forced: float | None = None
        # After a failed fetch, wait before trying again rather than retry on every request.
        self._retry_after = 0.0
        self._inflight: asyncio.Task[None] | None = None

    async def get_key(self, kid: str) -> PyJWK:
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self.ttl_seconds
        fetched_before = self._fetched_at
        if self._inflight is not None or (stale and now >= self._retry_after):
            await self._refresh(forced=False)
        key = self._keys.get(kid)
        # A set fetched during this very call is as fresh as a forced refresh would get.
        just_fetched = self._fetched_at != fetched_before
        if key is None and not just_fetched and self._may_force(self._clock()):
            await self._refresh(forced=True)
            key = self._keys.get(kid)
        if key is not None:
            return key
        if self._fetched_at is None:
            raise AuthError("signing keys unavailable")
        raise AuthError("unknown signing key")

    async def refresh(self) -> None:
        """Fetch now (e.g. at start-up), joining a fetch already in flight."""
        await self._refresh(forced=False)

    async def aclose(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _may_force(self, now: float) -> bool:
        if now < self._retry_after:
            return False
        return self._last_forced is None or now - self._last_forced >= self.min_refresh_interval

    async def _refresh(self, *, forced: bool) -> None:
        if self._inflight is None:
            if forced:
                self._last_forced = self._clock()
            self._inflight = asyncio.create_task(self._fetch())
        # shield: one caller giving up (request cancelled) must not cancel everybody's fetch.
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        try:
            keys = await self._download()
        except Exception as exc:
            self._retry_after = self._clock() + self.min_refresh_interval
            kept = f"keeping {len(self._keys)} cached keys" if self._keys else "no cached keys"
            logger.warning("JWKS refresh from %s failed (%s); %s", self.url, exc, kept)
        else:
            self._keys = keys
            self._fetched_at = self._clock()
            self._retry_after = 0.0
        finally:
            self._inflight = None

    async def _download(self) -> dict[str, PyJWK]:
        if self._client is None:
            self._client = httpx.AsyncClient()
        try:
            response = await self._client.get(self.url, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise RuntimeError(type(exc).__name__) from exc
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        try:
            keys = usable_keys(response.json())
        except ValueError as exc:  # JSONDecodeError is a ValueError
            raise RuntimeError("response is not a JWKS document") from exc
        if not keys:
            # An empty set is far more likely a broken deploy than a real "no keys"; keep ours.
            raise RuntimeError("no usable RS256/ES256 keys in response")
        return keys
