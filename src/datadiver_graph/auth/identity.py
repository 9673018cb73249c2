"""Who is calling: Clerk session JWTs, service keys, or nobody.

`identify()` turns request credentials into an `Identity`; `TokenVerifier` checks Clerk JWTs
against the issuer's JWKS (or the local development key, see dev/keys.py).
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import httpx
import jwt
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
)

from datadiver_graph.auth.jwks import (
    SUPPORTED_ALGORITHMS,
    AuthError,
    JwksCache,
    KeySource,
    StaticKeys,
)
from datadiver_graph.config import Settings, SettingsError
from datadiver_graph.dev import keys as dev_keys

__all__ = [
    "LEEWAY_SECONDS",
    "AuthError",
    "Identity",
    "TokenVerifier",
    "check_service_key",
    "identify",
]

LEEWAY_SECONDS = 5.0
VERIFIED_CACHE_SIZE = 10_000
# Clerk session tokens are around 1 KB; anything far larger is garbage or an attack.
MAX_TOKEN_LENGTH = 16_384
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss"]
_EMPTY_CLAIMS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller. `user_id` is the Clerk user id (JWT `sub`), which is our `externalId`."""

    user_id: str | None
    is_service: bool = False
    session_id: str | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: _EMPTY_CLAIMS, hash=False, repr=False)

    @classmethod
    def anonymous(cls) -> Identity:
        return cls(user_id=None)

    @classmethod
    def service(cls) -> Identity:
        # A service acts for any user, so it carries no user of its own.
        return cls(user_id=None, is_service=True)

    @property
    def is_authenticated(self) -> bool:
        return self.is_service or self.user_id is not None


class TokenVerifier:
    """Verifies Clerk session JWTs; one key source per allowed issuer.

    `clock` (epoch seconds) decides when a remembered token has expired; PyJWT checks the
    claims of a token it decodes against the real time.
    """

    def __init__(
        self,
        key_sources: Mapping[str, KeySource],
        *,
        audience: Sequence[str] = (),
        authorized_parties: Sequence[str] = (),
        leeway: float = LEEWAY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not key_sources:
            raise ValueError("at least one issuer is required")
        self._sources = dict(key_sources)
        self._audience = list(audience)
        self._authorized_parties = frozenset(authorized_parties)
        self._leeway = leeway
        self._clock = clock
        # token -> (identity, expiry): a browser sends the same session token on every
        # request for its ~60 s life; verifying it once saves a decode and an RSA check per
        # request. Only fully verified tokens enter, and each leaves at its `exp`.
        self._verified: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    @classmethod
    def from_settings(
        cls, settings: Settings, *, http_client: httpx.AsyncClient | None = None
    ) -> TokenVerifier:
        """Clerk issuers from settings, or the local dev key when developing without Clerk.

        In dev mode this reads (or, the first time, generates) the key file synchronously;
        call it at start-up, not per request.
        """
        sources: dict[str, KeySource] = {}
        if settings.clerk_issuer:
            caches: dict[str, JwksCache] = {}
            for issuer in settings.clerk_issuer:
                url = settings.clerk_jwks_url or f"{issuer}/.well-known/jwks.json"
                # Issuers sharing one CLERK_JWKS_URL share one cache and one fetch.
                if url not in caches:
                    caches[url] = JwksCache(url, settings.cache_ttl, http_client)
                sources[issuer] = caches[url]
        elif settings.is_production:
            raise SettingsError("CLERK_ISSUER is required in production")
        else:
            sources[dev_keys.DEV_ISSUER] = StaticKeys(dev_keys.dev_jwks(settings))
        return cls(
            sources,
            audience=settings.clerk_jwt_audience,
            authorized_parties=settings.clerk_authorized_parties,
        )

    @property
    def issuers(self) -> list[str]:
        return list(self._sources)

    async def aclose(self) -> None:
        for source in {id(s): s for s in self._sources.values()}.values():
            if isinstance(source, JwksCache):
                await source.aclose()

    async def verify(self, token: str) -> Identity:
        cached = self._verified.get(token)
        if cached is not None:
            identity, expires = cached
            if self._clock() < expires:
                self._verified.move_to_end(token)
                return identity
            del self._verified[token]
        identity = await self._verify(token)
        exp = identity.claims.get("exp")
        if isinstance(exp, int | float):
            self._verified[token] = (identity, float(exp) + self._leeway)
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        return identity

    async def _verify(self, token: str) -> Identity:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise AuthError("malformed token")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except InvalidTokenError:
            raise AuthError("malformed token") from None

        alg = header.get("alg")
        # Rejects "none" and every HMAC alg before any key is looked at.
        if alg not in SUPPORTED_ALGORITHMS:
            raise AuthError("unsupported token algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("token has no key id")
        # The unverified iss only chooses which allowed issuer's keys to try; a forged iss
        # cannot make us fetch keys from anywhere else, and the signature is checked after.
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or issuer not in self._sources:
            raise AuthError("wrong issuer")

        key = await self._sources[issuer].get_key(kid)
        if alg != key.algorithm_name:
            raise AuthError("token algorithm does not match its key")

        claims = self._decode(token, key, issuer)
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthError("token missing sub claim")
        azp = claims.get("azp")
        # Clerk sets azp only for browser-originated tokens; its absence is not a failure.
        if self._authorized_parties and azp is not None and azp not in self._authorized_parties:
            raise AuthError("wrong authorized party")
        sid = claims.get("sid")
        return Identity(
            user_id=subject,
            session_id=sid if isinstance(sid, str) else None,
            claims=MappingProxyType(claims),
        )

    def _decode(self, token: str, key: jwt.PyJWK, issuer: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                issuer=issuer,
                audience=self._audience or None,
                options={"require": _REQUIRED_CLAIMS, "verify_aud": bool(self._audience)},
                leeway=self._leeway,
            )
        except ExpiredSignatureError:
            raise AuthError("token expired") from None
        except ImmatureSignatureError as exc:
            reason = "token issued in the future" if "(iat)" in str(exc) else "token not yet valid"
            raise AuthError(reason) from None
        except MissingRequiredClaimError as exc:
            raise AuthError(f"token missing {exc.claim} claim") from None
        except InvalidIssuerError:
            raise AuthError("wrong issuer") from None
        except InvalidAudienceError:
            raise AuthError("wrong audience") from None
        except InvalidSignatureError:
            raise AuthError("invalid signature") from None
        except InvalidAlgorithmError:
            raise AuthError("unsupported token algorithm") from None
        except DecodeError:
            raise AuthError("malformed token") from None
        except InvalidTokenError:
            raise AuthError("invalid token") from None
        return claims


def check_service_key(presented: str, keys: Sequence[str]) -> bool:
    """True when `presented` equals one of `keys`, in time that does not depend on which."""
    candidate = presented.encode()
    matched = False
    for key in keys:
        # No early exit: comparing against every key hides which one (and whether any) matched.
        matched |= hmac.compare_digest(candidate, key.encode())
    return matched and bool(presented)


async def identify(
    verifier: TokenVerifier,
    settings: Settings,
    *,
    authorization: str | None,
    session_cookie: str | None,
    service_key: str | None,
) -> Identity:
    """Credentials in precedence order: X-Service-Key, Authorization: Bearer, __session cookie.

    Credentials that are present but wrong raise AuthError rather than falling back to a
    weaker source or to anonymous, so a client with a broken token learns it (401).
    """
    if service_key is not None:
        if check_service_key(service_key.strip(), settings.service_api_keys):
            return Identity.service()
        raise AuthError("invalid service key")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError("unsupported authorization scheme")
        if not token.strip():
            raise AuthError("malformed token")
        return await verifier.verify(token.strip())
    if session_cookie:
        return await verifier.verify(session_cookie)
    return Identity.anonymous()
