"""A real JWKS endpoint for auth tests, plus test keys and a token builder.

The server's state is mutable so a test can rotate keys, make it fail, slow it down or stop it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.servers import serve_app


@dataclass(frozen=True)
class TestKey:
    __test__ = False  # not a pytest class

    kid: str
    alg: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @classmethod
    def rsa(cls, kid: str) -> TestKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> TestKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            data: dict[str, Any] = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**data, "kid": self.kid, "use": "sig"}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **header}
        )


def clerk_claims(issuer: str, sub: str | None = "user_123", **overrides: Any) -> dict[str, Any]:
    """Claims shaped like a Clerk session token; an override of None drops the claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": sub,
        "sid": "sess_456",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """Hand-built compact JWS, for tokens PyJWT refuses to produce (alg none, HS256 + PEM)."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signature)}"


@dataclass
class JwksServer:
    keys: list[TestKey] = field(default_factory=list)
    status: int = 200
    raw_body: str | None = None  # served verbatim instead of the JWKS (bad JSON tests)
    delay: float = 0.0
    hits: int = 0
    url: str = ""
    _stack: AsyncExitStack | None = None

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    async def _handle(self, request: Request) -> Response:
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return PlainTextResponse("boom", status_code=self.status)
        if self.raw_body is not None:
            return Response(self.raw_body, media_type="application/json")
        return JSONResponse({"keys": [key.jwk() for key in self.keys]})

    def reset(self, keys: list[TestKey]) -> None:
        """Back to a healthy server holding `keys`, for reuse across tests."""
        self.keys = list(keys)
        self.status, self.raw_body, self.delay, self.hits = 200, None, 0.0, 0

    async def start(self) -> None:
        app = Starlette(routes=[Route("/.well-known/jwks.json", self._handle)])
        self._stack = AsyncExitStack()
        self.url = await self._stack.enter_async_context(serve_app(app))

    async def stop(self) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
