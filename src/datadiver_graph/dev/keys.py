"""A local signing key so development works without a Clerk instance.

Active only when DATADIVER_ENV=development and CLERK_ISSUER is unset. The key lives in
`DATA_DIR/dev-signing-key.pem`, so tokens minted by `datadiver-graph dev-token` keep working
across restarts and across worker processes.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from datadiver_graph.config import Settings, SettingsError

DEV_ISSUER = "http://localhost/datadiver-dev"
DEV_KEY_FILENAME = "dev-signing-key.pem"
DEV_ALGORITHM = "RS256"


def dev_mode(settings: Settings) -> bool:
    return settings.datadiver_env == "development" and not settings.clerk_issuer


def dev_key_path(settings: Settings) -> Path:
    return settings.data_dir / DEV_KEY_FILENAME


def load_or_create_dev_key(path: Path) -> rsa.RSAPrivateKey:
    """Read the key at `path`, generating it (mode 0600) the first time."""
    if not path.exists():
        _create_key_file(path)
    stat = path.stat()
    return _load_key(str(path), stat.st_mtime_ns, stat.st_size)


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    # Created 0600 from the start: a chmod afterwards would leave a window where it is readable.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        # link() refuses to overwrite: when two workers race, the first key wins and the
        # loser reads it, so both sign with the same key.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@functools.lru_cache(maxsize=8)
def _load_key(path: str, mtime_ns: int, size: int) -> rsa.RSAPrivateKey:
    # mtime and size are part of the cache key so a replaced file is read again.
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SettingsError(f"{path} does not hold an RSA private key")
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """The public half as a JWK, its kid the RFC 7638 thumbprint (stable for a given key)."""
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    canonical = json.dumps(
        {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    kid = _b64url(hashlib.sha256(canonical.encode("ascii")).digest())
    return {"kty": "RSA", "n": jwk["n"], "e": jwk["e"], "kid": kid, "alg": "RS256", "use": "sig"}


def _require_dev_mode(settings: Settings) -> None:
    if not dev_mode(settings):
        raise SettingsError(
            "the development signing key is only used when DATADIVER_ENV=development "
            "and CLERK_ISSUER is unset"
        )


def dev_jwks(settings: Settings) -> dict[str, Any]:
    """The public JWKS of the development key, as served at /.well-known/jwks.json."""
    _require_dev_mode(settings)
    return {"keys": [public_jwk(load_or_create_dev_key(dev_key_path(settings)))]}


def mint_dev_token(
    settings: Settings,
    user_id: str,
    ttl_seconds: int = 3600,
    *,
    session_id: str | None = None,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """A token shaped like a Clerk session token, signed with the development key."""
    _require_dev_mode(settings)
    if not user_id:
        raise ValueError("user_id must not be empty")
    key = load_or_create_dev_key(dev_key_path(settings))
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": DEV_ISSUER,
        "sub": user_id,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
    }
    if session_id is not None:
        claims["sid"] = session_id
    if settings.clerk_jwt_audience:
        # The verifier applies the configured audience in dev mode too.
        claims["aud"] = settings.clerk_jwt_audience[0]
    if settings.clerk_authorized_parties:
        claims["azp"] = settings.clerk_authorized_parties[0]
    claims.update(extra_claims or {})
    return jwt.encode(claims, key, algorithm=DEV_ALGORITHM, headers={"kid": public_jwk(key)["kid"]})
