"""Authentication against a real JWKS endpoint served over HTTP on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.routing import Route

from datadiver_graph.auth.identity import (
    AuthError,
    Identity,
    TokenVerifier,
    check_service_key,
    identify,
)
from datadiver_graph.auth.jwks import JwksCache, usable_keys
from datadiver_graph.config import Settings, SettingsError
from datadiver_graph.dev.jwks_route import jwks_endpoint
from datadiver_graph.dev.keys import (
    DEV_ISSUER,
    DEV_KEY_FILENAME,
    dev_jwks,
    mint_dev_token,
)
from tests.clock import ManualClock
from tests.jwks_server import JwksServer, TestKey, b64url, clerk_claims, unsigned_token
from tests.servers import serve_app

SERVICE_KEY = "svc-key-0123456789abcdef"
OTHER_SERVICE_KEY = "svc-key-fedcba9876543210"


def make_settings(**values: Any) -> Settings:
    # _env_file=None: a developer's .env must not change what these tests see.
    return Settings(_env_file=None, **values)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        for name in getattr(alias, "choices", ()):
            monkeypatch.delenv(str(name), raising=False)


@pytest.fixture(scope="session")
def rsa_key() -> TestKey:
    return TestKey.rsa("rsa-1")


@pytest.fixture(scope="session")
def rsa_key_2() -> TestKey:
    return TestKey.rsa("rsa-2")


@pytest.fixture(scope="session")
def ec_key() -> TestKey:
    return TestKey.ec("ec-1")


@pytest.fixture(scope="session")
async def _shared_servers() -> AsyncIterator[tuple[JwksServer, JwksServer]]:
    # Started once: a uvicorn start/stop per test would dominate the run time.
    first, second = JwksServer(), JwksServer()
    await first.start()
    await second.start()
    yield first, second
    await first.stop()
    await second.stop()


@pytest.fixture
def server(
    _shared_servers: tuple[JwksServer, JwksServer], rsa_key: TestKey, ec_key: TestKey
) -> JwksServer:
    _shared_servers[0].reset([rsa_key, ec_key])
    return _shared_servers[0]


@pytest.fixture
def other_server(_shared_servers: tuple[JwksServer, JwksServer], rsa_key_2: TestKey) -> JwksServer:
    _shared_servers[1].reset([rsa_key_2])
    return _shared_servers[1]


@pytest.fixture
async def own_server(rsa_key: TestKey, ec_key: TestKey) -> AsyncIterator[JwksServer]:
    """A server of the test's own, which it may stop."""
    srv = JwksServer(keys=[rsa_key, ec_key])
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def verifier(server: JwksServer) -> AsyncIterator[TokenVerifier]:
    v = TokenVerifier.from_settings(make_settings(CLERK_ISSUER=server.issuer))
    yield v
    await v.aclose()


async def build_verifier(**settings: Any) -> TokenVerifier:
    return TokenVerifier.from_settings(make_settings(**settings))


async def rejected(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthError) as info:
        await verifier.verify(token)
    return str(info.value)


# --- valid tokens -------------------------------------------------------------------------


async def test_rs256_token_is_accepted(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey
) -> None:
    identity = await verifier.verify(rsa_key.sign(clerk_claims(server.issuer)))
    assert identity.user_id == "user_123"
    assert identity.session_id == "sess_456"
    assert identity.is_authenticated and not identity.is_service
    assert identity.claims["iss"] == server.issuer


async def test_es256_token_is_accepted(
    verifier: TokenVerifier, server: JwksServer, ec_key: TestKey
) -> None:
    identity = await verifier.verify(ec_key.sign(clerk_claims(server.issuer, sub="user_ec")))
    assert identity.user_id == "user_ec"


async def test_keys_are_cached_between_verifications(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey, ec_key: TestKey
) -> None:
    for key in (rsa_key, ec_key, rsa_key):
        await verifier.verify(key.sign(clerk_claims(server.issuer)))
    assert server.hits == 1


# --- time claims --------------------------------------------------------------------------


async def test_expired_token_is_rejected(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey
) -> None:
    now = int(time.time())
    token = rsa_key.sign(clerk_claims(server.issuer, iat=now - 120, nbf=now - 120, exp=now - 30))
    assert await rejected(verifier, token) == "token expired"


async def test_exp_within_leeway_is_accepted(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey
) -> None:
    now = int(time.time())
    token = rsa_key.sign(clerk_claims(server.issuer, iat=now - 60, exp=now - 2))
    assert (await verifier.verify(token)).user_id == "user_123"


async def test_token_not_yet_valid_is_rejected(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey
) -> None:
    now = int(time.time())
    token = rsa_key.sign(clerk_claims(server.issuer, nbf=now + 30, exp=now + 120))
    assert await rejected(verifier, token) == "token not yet valid"


async def test_nbf_within_leeway_is_accepted(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey
) -> None:
    now = int(time.time())
    token = rsa_key.sign(clerk_claims(server.issuer, nbf=now + 2, iat=now + 2))
    assert (await verifier.verify(token)).user_id == "user_123"


async def test_token_issued_in_the_future_is_rejected(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey
) -> None:
    now = int(time.time())
    token = rsa_key.sign(clerk_claims(server.issuer, iat=now + 30, nbf=None, exp=now + 120))
    assert await rejected(verifier, token) == "token issued in the future"


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "iss"])
async def test_required_claims(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey, claim: str
) -> None:
    token = rsa_key.sign(clerk_claims(server.issuer, **{claim: None}))
    reason = await rejected(verifier, token)
    assert reason == ("wrong issuer" if claim == "iss" else f"token missing {claim} claim")


async def test_empty_sub_is_rejected(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey
) -> None:
    assert await rejected(verifier, rsa_key.sign(clerk_claims(server.issuer, sub=""))) == (
        "token missing sub claim"
    )


# --- issuer, audience, authorized party ---------------------------------------------------


async def test_wrong_issuer_is_rejected_without_fetching_its_keys(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey
) -> None:
    token = rsa_key.sign(clerk_claims("https://evil.example.com"))
    assert await rejected(verifier, token) == "wrong issuer"
    assert server.hits == 0


async def test_issuer_is_matched_exactly(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey
) -> None:
    token = rsa_key.sign(clerk_claims(server.issuer + ".evil.example.com"))
    assert await rejected(verifier, token) == "wrong issuer"


async def test_each_allowed_issuer_uses_its_own_keys(
    server: JwksServer, other_server: JwksServer, rsa_key: TestKey, rsa_key_2: TestKey
) -> None:
    v = await build_verifier(CLERK_ISSUER=f"{server.issuer},{other_server.issuer}")
    try:
        assert (await v.verify(rsa_key.sign(clerk_claims(server.issuer)))).user_id
        assert (await v.verify(rsa_key_2.sign(clerk_claims(other_server.issuer)))).user_id
        # Signed by the first issuer's key but claiming the second issuer: the second
        # issuer's JWKS does not hold that key.
        forged = rsa_key.sign(clerk_claims(other_server.issuer))
        assert await rejected(v, forged) == "unknown signing key"
    finally:
        await v.aclose()


async def test_shared_jwks_url_serves_every_issuer(server: JwksServer, rsa_key: TestKey) -> None:
    v = await build_verifier(
        CLERK_ISSUER=f"{server.issuer},https://clerk.example.com",
        CLERK_JWKS_URL=server.jwks_url,
    )
    try:
        await v.verify(rsa_key.sign(clerk_claims(server.issuer)))
        await v.verify(rsa_key.sign(clerk_claims("https://clerk.example.com")))
        assert server.hits == 1
    finally:
        await v.aclose()


async def test_audience_is_checked_when_configured(server: JwksServer, rsa_key: TestKey) -> None:
    v = await build_verifier(CLERK_ISSUER=server.issuer, CLERK_JWT_AUDIENCE="convex")
    try:
        ok = await v.verify(rsa_key.sign(clerk_claims(server.issuer, aud="convex")))
        assert ok.user_id == "user_123"
        in_list = rsa_key.sign(clerk_claims(server.issuer, aud=["other", "convex"]))
        assert (await v.verify(in_list)).user_id == "user_123"
        wrong = rsa_key.sign(clerk_claims(server.issuer, aud="not-convex"))
        assert await rejected(v, wrong) == "wrong audience"
        missing = rsa_key.sign(clerk_claims(server.issuer))
        assert await rejected(v, missing) == "token missing aud claim"
    finally:
        await v.aclose()


async def test_audience_is_ignored_when_not_configured(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey
) -> None:
    token = rsa_key.sign(clerk_claims(server.issuer, aud="anything"))
    assert (await verifier.verify(token)).user_id == "user_123"


async def test_authorized_party_is_checked_when_configured_and_present(
    server: JwksServer, rsa_key: TestKey
) -> None:
    app_url = "https://app.datadiver.example"
    v = await build_verifier(CLERK_ISSUER=server.issuer, CLERK_AUTHORIZED_PARTIES=app_url)
    try:
        assert await v.verify(rsa_key.sign(clerk_claims(server.issuer, azp=app_url)))
        # Clerk omits azp on tokens not minted for a browser origin.
        assert await v.verify(rsa_key.sign(clerk_claims(server.issuer)))
        evil = rsa_key.sign(clerk_claims(server.issuer, azp="https://evil.example.com"))
        assert await rejected(v, evil) == "wrong authorized party"
    finally:
        await v.aclose()


async def test_azp_is_ignored_when_no_parties_configured(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey
) -> None:
    token = rsa_key.sign(clerk_claims(server.issuer, azp="https://anywhere.example.com"))
    assert (await verifier.verify(token)).user_id == "user_123"


# --- signatures and algorithms ------------------------------------------------------------


async def test_tampered_payload_is_rejected(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey
) -> None:
    head, _, sig = rsa_key.sign(clerk_claims(server.issuer)).split(".")
    forged_body = b64url(json.dumps(clerk_claims(server.issuer, sub="user_admin")).encode())
    assert await rejected(verifier, f"{head}.{forged_body}.{sig}") == "invalid signature"


async def test_alg_none_is_rejected(verifier: TokenVerifier, server: JwksServer) -> None:
    for alg in ("none", "None", "NONE"):
        token = unsigned_token({"alg": alg, "kid": "rsa-1"}, clerk_claims(server.issuer))
        assert await rejected(verifier, token) == "unsupported token algorithm"
    assert server.hits == 0


async def test_hs256_with_the_public_key_as_secret_is_rejected(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey
) -> None:
    # The classic alg-confusion attack: HMAC keyed with the (public) PEM.
    pem = rsa_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}
    unsigned = unsigned_token(header, clerk_claims(server.issuer))
    signing_input = unsigned.rsplit(".", 1)[0].encode()
    signature = hmac.new(pem, signing_input, hashlib.sha256).digest()
    token = f"{signing_input.decode()}.{b64url(signature)}"
    reason = await rejected(verifier, token)
    assert reason == "unsupported token algorithm"
    assert "BEGIN" not in reason


async def test_header_alg_must_match_the_key(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey, ec_key: TestKey
) -> None:
    # ES256 signature presented under the RSA key's kid, and the reverse.
    ec_under_rsa_kid = ec_key.sign(clerk_claims(server.issuer), kid=rsa_key.kid)
    assert await rejected(verifier, ec_under_rsa_kid) == "token algorithm does not match its key"
    rsa_under_ec_kid = rsa_key.sign(clerk_claims(server.issuer), kid=ec_key.kid)
    assert await rejected(verifier, rsa_under_ec_kid) == "token algorithm does not match its key"


async def test_other_asymmetric_algorithms_are_rejected(
    verifier: TokenVerifier, server: JwksServer
) -> None:
    rs384 = TestKey.rsa("rsa-1")
    token = jwt.encode(
        clerk_claims(server.issuer), rs384.private, algorithm="RS384", headers={"kid": "rsa-1"}
    )
    assert await rejected(verifier, token) == "unsupported token algorithm"


async def test_token_without_kid_is_rejected(verifier: TokenVerifier, server: JwksServer) -> None:
    token = unsigned_token({"alg": "RS256"}, clerk_claims(server.issuer), b"sig")
    assert await rejected(verifier, token) == "token has no key id"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * 20_000])
async def test_malformed_tokens_are_rejected(verifier: TokenVerifier, token: str) -> None:
    assert await rejected(verifier, token) == "malformed token"


# --- JWKS cache: rotation, rate limit, outages ---------------------------------------------


async def test_unknown_kid_refresh_picks_up_a_rotated_key(
    server: JwksServer, rsa_key: TestKey, rsa_key_2: TestKey
) -> None:
    server.keys = [rsa_key]
    v = await build_verifier(CLERK_ISSUER=server.issuer)
    try:
        await v.verify(rsa_key.sign(clerk_claims(server.issuer)))
        assert server.hits == 1
        server.keys = [rsa_key_2]  # Clerk rotated its signing key
        identity = await v.verify(rsa_key_2.sign(clerk_claims(server.issuer, sub="user_new")))
        assert identity.user_id == "user_new"
        assert server.hits == 2
    finally:
        await v.aclose()


async def test_unknown_kid_refresh_is_rate_limited(server: JwksServer, rsa_key: TestKey) -> None:
    clock = ManualClock()
    cache = JwksCache(server.jwks_url, ttl_seconds=300, min_refresh_interval=10, clock=clock)
    v = TokenVerifier({server.issuer: cache})
    try:
        await v.verify(rsa_key.sign(clerk_claims(server.issuer)))
        assert server.hits == 1
        for n in range(5):
            token = rsa_key.sign(clerk_claims(server.issuer), kid=f"made-up-{n}")
            assert await rejected(v, token) == "unknown signing key"
        assert server.hits == 2  # one forced refresh for the lot

        clock.advance(9.9)
        token = rsa_key.sign(clerk_claims(server.issuer), kid="made-up-later")
        assert await rejected(v, token) == "unknown signing key"
        assert server.hits == 2  # still within the interval

        clock.advance(0.1)
        bursts = [rsa_key.sign(clerk_claims(server.issuer), kid=f"burst-{n}") for n in range(20)]
        results = await asyncio.gather(*(v.verify(t) for t in bursts), return_exceptions=True)
        assert all(isinstance(r, AuthError) for r in results)
        assert server.hits == 3  # concurrent unknown kids share one forced refresh
        # The known key still verifies without another fetch.
        await v.verify(rsa_key.sign(clerk_claims(server.issuer)))
        assert server.hits == 3
    finally:
        await v.aclose()


async def test_default_refresh_interval_is_ten_seconds(server: JwksServer) -> None:
    assert JwksCache(server.jwks_url).min_refresh_interval == 10.0


async def test_concurrent_cold_start_shares_one_fetch(
    verifier: TokenVerifier, server: JwksServer, rsa_key: TestKey
) -> None:
    server.delay = 0.2
    tokens = [rsa_key.sign(clerk_claims(server.issuer, sub=f"user_{n}")) for n in range(20)]
    identities = await asyncio.gather(*(verifier.verify(t) for t in tokens))
    assert [i.user_id for i in identities] == [f"user_{n}" for n in range(20)]
    assert server.hits == 1


async def test_ttl_expiry_refetches_keys(
    server: JwksServer, rsa_key: TestKey, rsa_key_2: TestKey
) -> None:
    server.keys = [rsa_key]
    # A huge forced-refresh interval proves the new key arrives through the TTL path.
    clock = ManualClock()
    cache = JwksCache(server.jwks_url, ttl_seconds=60, min_refresh_interval=3600, clock=clock)
    v = TokenVerifier({server.issuer: cache})
    try:
        await v.verify(rsa_key.sign(clerk_claims(server.issuer)))
        # An unknown kid spends the one forced refresh the interval allows.
        unknown = rsa_key.sign(clerk_claims(server.issuer), kid="made-up")
        assert await rejected(v, unknown) == "unknown signing key"
        assert server.hits == 2
        server.keys = [rsa_key_2]
        rotated = rsa_key_2.sign(clerk_claims(server.issuer))
        clock.advance(59.9)
        assert await rejected(v, rotated) == "unknown signing key"
        assert server.hits == 2
        clock.advance(0.1)
        await v.verify(rotated)
        assert server.hits == 3
    finally:
        await v.aclose()


@pytest.mark.parametrize("failure", ["http-500", "bad-json", "no-usable-keys", "stopped"])
async def test_outage_keeps_the_cached_keys(
    own_server: JwksServer, rsa_key: TestKey, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = own_server
    clock = ManualClock()
    cache = JwksCache(server.jwks_url, ttl_seconds=60, min_refresh_interval=10, clock=clock)
    v = TokenVerifier({server.issuer: cache})
    try:
        await v.verify(rsa_key.sign(clerk_claims(server.issuer)))
        if failure == "http-500":
            server.status = 500
        elif failure == "bad-json":
            server.raw_body = "{not json"
        elif failure == "no-usable-keys":
            server.raw_body = '{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "rsa-1"}]}'
        else:
            await server.stop()
        clock.advance(60)  # past the TTL, so the next call tries to refresh
        with caplog.at_level(logging.WARNING, logger="datadiver_graph.auth.jwks"):
            # A token not seen before: a seen one is answered from the verified-token cache.
            fresh = rsa_key.sign(clerk_claims(server.issuer, jti="after-outage"))
            identity = await v.verify(fresh)
        assert identity.user_id == "user_123"
        assert "JWKS refresh" in caplog.text and "keeping 2 cached keys" in caplog.text
        # Unknown kids still fail cleanly while the issuer is down.
        clock.advance(10)
        unknown = rsa_key.sign(clerk_claims(server.issuer), kid="rotated")
        assert await rejected(v, unknown) == "unknown signing key"
    finally:
        await v.aclose()


@pytest.mark.parametrize("failure", ["http-500", "stopped"])
async def test_no_keys_ever_and_issuer_down_is_an_auth_error(
    own_server: JwksServer, rsa_key: TestKey, failure: str
) -> None:
    server = own_server
    if failure == "http-500":
        server.status = 503
    else:
        await server.stop()
    v = await build_verifier(CLERK_ISSUER=server.issuer)
    try:
        token = rsa_key.sign(clerk_claims(server.issuer))
        assert await rejected(v, token) == "signing keys unavailable"
        hits = server.hits
        # The failure is remembered briefly: a storm of requests is not a storm of fetches.
        assert await rejected(v, token) == "signing keys unavailable"
        assert server.hits == hits
    finally:
        await v.aclose()


async def test_recovers_once_the_issuer_is_back(server: JwksServer, rsa_key: TestKey) -> None:
    server.status = 500
    clock = ManualClock()
    cache = JwksCache(server.jwks_url, ttl_seconds=300, min_refresh_interval=10, clock=clock)
    v = TokenVerifier({server.issuer: cache})
    try:
        token = rsa_key.sign(clerk_claims(server.issuer))
        assert await rejected(v, token) == "signing keys unavailable"
        server.status = 200
        clock.advance(9.9)  # the failure is remembered for the interval
        assert await rejected(v, token) == "signing keys unavailable"
        assert server.hits == 1
        clock.advance(0.1)
        assert (await v.verify(token)).user_id == "user_123"
    finally:
        await v.aclose()


async def test_cache_uses_a_supplied_http_client(server: JwksServer, rsa_key: TestKey) -> None:
    async with httpx.AsyncClient() as client:
        v = TokenVerifier.from_settings(
            make_settings(CLERK_ISSUER=server.issuer), http_client=client
        )
        await v.verify(rsa_key.sign(clerk_claims(server.issuer)))
        await v.aclose()
        assert not client.is_closed  # not ours to close


def test_only_rs256_and_es256_signing_keys_are_usable(rsa_key: TestKey, ec_key: TestKey) -> None:
    p384 = TestKey("p384", "ES384", ec.generate_private_key(ec.SECP384R1()))
    jwks = {
        "keys": [
            rsa_key.jwk(),
            ec_key.jwk(),
            p384.jwk(),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {**rsa_key.jwk(), "kid": "rsa-as-hs256", "alg": "HS256"},
            {**rsa_key.jwk(), "kid": "rsa-for-encryption", "use": "enc"},
            {**rsa_key.jwk(), "kid": None},
            "not a key",
        ]
    }
    keys = usable_keys(jwks)
    assert sorted(keys) == ["ec-1", "rsa-1"]
    assert keys["rsa-1"].algorithm_name == "RS256"
    assert keys["ec-1"].algorithm_name == "ES256"


# --- service keys and identify -------------------------------------------------------------


def test_check_service_key() -> None:
    keys = [SERVICE_KEY, OTHER_SERVICE_KEY]
    assert check_service_key(SERVICE_KEY, keys)
    assert check_service_key(OTHER_SERVICE_KEY, keys)
    assert not check_service_key("svc-key-wrong-wrong-wrong", keys)
    assert not check_service_key(SERVICE_KEY[:-1], keys)
    assert not check_service_key("", keys)
    assert not check_service_key("", [])
    assert not check_service_key(SERVICE_KEY, [])
    assert not check_service_key("ключ-не-ascii-0123456789", keys)


@pytest.fixture
def id_settings(server: JwksServer) -> Settings:
    return make_settings(
        CLERK_ISSUER=server.issuer, SERVICE_API_KEYS=f"{SERVICE_KEY},{OTHER_SERVICE_KEY}"
    )


async def test_identify_without_credentials_is_anonymous(
    verifier: TokenVerifier, id_settings: Settings
) -> None:
    identity = await identify(
        verifier, id_settings, authorization=None, session_cookie=None, service_key=None
    )
    assert identity == Identity.anonymous()
    assert not identity.is_authenticated and identity.user_id is None


async def test_identify_service_key_wins_over_a_bearer_token(
    verifier: TokenVerifier, id_settings: Settings, server: JwksServer, rsa_key: TestKey
) -> None:
    token = rsa_key.sign(clerk_claims(server.issuer))
    identity = await identify(
        verifier,
        id_settings,
        authorization=f"Bearer {token}",
        session_cookie="junk",
        service_key=OTHER_SERVICE_KEY,
    )
    assert identity.is_service and identity.is_authenticated
    assert identity.user_id is None
    assert server.hits == 0  # the token was never looked at


async def test_identify_wrong_service_key_is_refused_even_with_a_valid_token(
    verifier: TokenVerifier, id_settings: Settings, server: JwksServer, rsa_key: TestKey
) -> None:
    token = rsa_key.sign(clerk_claims(server.issuer))
    with pytest.raises(AuthError, match="invalid service key"):
        await identify(
            verifier,
            id_settings,
            authorization=f"Bearer {token}",
            session_cookie=None,
            service_key="svc-key-not-the-right-one",
        )


async def test_identify_service_key_refused_when_none_configured(
    verifier: TokenVerifier, server: JwksServer
) -> None:
    with pytest.raises(AuthError, match="invalid service key"):
        await identify(
            verifier,
            make_settings(CLERK_ISSUER=server.issuer),
            authorization=None,
            session_cookie=None,
            service_key=SERVICE_KEY,
        )


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "BeArEr"])
async def test_identify_bearer_scheme_is_case_insensitive(
    verifier: TokenVerifier,
    id_settings: Settings,
    server: JwksServer,
    rsa_key: TestKey,
    scheme: str,
) -> None:
    token = rsa_key.sign(clerk_claims(server.issuer))
    identity = await identify(
        verifier,
        id_settings,
        authorization=f"{scheme} {token}",
        session_cookie=None,
        service_key=None,
    )
    assert identity.user_id == "user_123" and not identity.is_service


async def test_identify_bearer_wins_over_the_session_cookie(
    verifier: TokenVerifier, id_settings: Settings, server: JwksServer, rsa_key: TestKey
) -> None:
    bearer = rsa_key.sign(clerk_claims(server.issuer, sub="user_bearer"))
    identity = await identify(
        verifier,
        id_settings,
        authorization=f"Bearer {bearer}",
        session_cookie="not-even-a-jwt",
        service_key=None,
    )
    assert identity.user_id == "user_bearer"


async def test_identify_session_cookie(
    verifier: TokenVerifier, id_settings: Settings, server: JwksServer, ec_key: TestKey
) -> None:
    cookie = ec_key.sign(clerk_claims(server.issuer, sub="user_cookie"))
    identity = await identify(
        verifier, id_settings, authorization=None, session_cookie=cookie, service_key=None
    )
    assert identity.user_id == "user_cookie"


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Basic dXNlcjpwYXNz", "unsupported authorization scheme"),
        ("Bearer", "malformed token"),
        ("Bearer   ", "malformed token"),
        ("Bearer not-a-jwt", "malformed token"),
    ],
)
async def test_identify_bad_authorization_header(
    verifier: TokenVerifier, id_settings: Settings, authorization: str, reason: str
) -> None:
    with pytest.raises(AuthError) as info:
        await identify(
            verifier,
            id_settings,
            authorization=authorization,
            session_cookie=None,
            service_key=None,
        )
    assert str(info.value) == reason


async def test_identify_expired_cookie_is_an_error_not_anonymous(
    verifier: TokenVerifier, id_settings: Settings, server: JwksServer, rsa_key: TestKey
) -> None:
    now = int(time.time())
    cookie = rsa_key.sign(clerk_claims(server.issuer, iat=now - 600, exp=now - 300))
    with pytest.raises(AuthError, match="token expired"):
        await identify(
            verifier, id_settings, authorization=None, session_cookie=cookie, service_key=None
        )


# --- development key -----------------------------------------------------------------------


async def test_dev_token_round_trip(tmp_path: Path) -> None:
    settings = make_settings(DATA_DIR=str(tmp_path))
    verifier = TokenVerifier.from_settings(settings)
    assert verifier.issuers == [DEV_ISSUER]
    token = mint_dev_token(settings, "user_dev", session_id="sess_dev")
    identity = await verifier.verify(token)
    assert identity.user_id == "user_dev"
    assert identity.session_id == "sess_dev"
    assert identity.claims["iss"] == DEV_ISSUER


async def test_dev_token_expiry_is_enforced(tmp_path: Path) -> None:
    settings = make_settings(DATA_DIR=str(tmp_path))
    verifier = TokenVerifier.from_settings(settings)
    now = int(time.time())
    token = mint_dev_token(settings, "user_dev", extra_claims={"iat": now - 600, "exp": now - 60})
    assert await rejected(verifier, token) == "token expired"


async def test_dev_token_honours_configured_audience(tmp_path: Path) -> None:
    settings = make_settings(DATA_DIR=str(tmp_path), CLERK_JWT_AUDIENCE="convex")
    verifier = TokenVerifier.from_settings(settings)
    identity = await verifier.verify(mint_dev_token(settings, "user_dev"))
    assert identity.claims["aud"] == "convex"


async def test_dev_key_is_persisted_across_verifiers(tmp_path: Path) -> None:
    settings = make_settings(DATA_DIR=str(tmp_path / "nested" / "data"))
    first = TokenVerifier.from_settings(settings)
    key_file = tmp_path / "nested" / "data" / DEV_KEY_FILENAME
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pem = key_file.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    token = mint_dev_token(settings, "user_dev")

    second = TokenVerifier.from_settings(make_settings(DATA_DIR=str(tmp_path / "nested" / "data")))
    assert (await second.verify(token)).user_id == "user_dev"
    assert (await first.verify(token)).user_id == "user_dev"
    assert key_file.read_bytes() == pem
    assert dev_jwks(settings) == dev_jwks(settings)
    assert list(tmp_path.joinpath("nested", "data").iterdir()) == [key_file]  # no temp files


async def test_dev_keys_differ_between_data_dirs(tmp_path: Path) -> None:
    a = make_settings(DATA_DIR=str(tmp_path / "a"))
    b = make_settings(DATA_DIR=str(tmp_path / "b"))
    verifier_b = TokenVerifier.from_settings(b)
    assert dev_jwks(a)["keys"][0]["kid"] != dev_jwks(b)["keys"][0]["kid"]
    assert await rejected(verifier_b, mint_dev_token(a, "user_dev")) == "unknown signing key"


async def test_dev_jwks_endpoint_serves_a_verifiable_key_set(tmp_path: Path) -> None:
    settings = make_settings(DATA_DIR=str(tmp_path))
    app = Starlette(routes=[Route("/.well-known/jwks.json", jwks_endpoint)])
    app.state.settings = settings
    async with serve_app(app) as url:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{url}/.well-known/jwks.json")
        assert response.status_code == 200
        body = response.json()
        assert body == dev_jwks(settings)
        (jwk,) = body["keys"]
        assert set(jwk) == {"kty", "n", "e", "kid", "alg", "use"}  # public parts only
        # A verifier that knows nothing but the served URL accepts a minted dev token.
        cache = JwksCache(f"{url}/.well-known/jwks.json")
        verifier = TokenVerifier({DEV_ISSUER: cache})
        try:
            assert (await verifier.verify(mint_dev_token(settings, "user_dev"))).user_id
        finally:
            await verifier.aclose()


async def test_dev_jwks_endpoint_is_404_when_clerk_is_configured(tmp_path: Path) -> None:
    app = Starlette(routes=[Route("/.well-known/jwks.json", jwks_endpoint)])
    app.state.settings = make_settings(
        DATA_DIR=str(tmp_path), CLERK_ISSUER="https://clerk.example.com"
    )
    async with serve_app(app) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/.well-known/jwks.json")
    assert response.status_code == 404
    assert not (tmp_path / DEV_KEY_FILENAME).exists()


def test_production_without_issuer_is_refused(tmp_path: Path) -> None:
    settings = make_settings(DATADIVER_ENV="production", DATA_DIR=str(tmp_path))
    with pytest.raises(SettingsError, match="CLERK_ISSUER is required in production"):
        TokenVerifier.from_settings(settings)
    with pytest.raises(SettingsError):
        mint_dev_token(settings, "user_dev")
    assert not (tmp_path / DEV_KEY_FILENAME).exists()


def test_production_with_issuer_builds_without_network() -> None:
    settings = make_settings(DATADIVER_ENV="production", CLERK_ISSUER="https://clerk.example.com")
    assert TokenVerifier.from_settings(settings).issuers == ["https://clerk.example.com"]


def test_dev_tokens_are_refused_when_clerk_is_configured(tmp_path: Path) -> None:
    settings = make_settings(DATA_DIR=str(tmp_path), CLERK_ISSUER="https://clerk.example.com")
    with pytest.raises(SettingsError, match="only used when"):
        mint_dev_token(settings, "user_dev")


async def test_a_verified_token_is_remembered_until_it_expires(
    server: JwksServer, rsa_key: TestKey, rsa_key_2: TestKey
) -> None:
    # One clock for both: the key cache's TTL and the remembered token's `exp`.
    clock = ManualClock(time.time())
    cache = JwksCache(server.jwks_url, ttl_seconds=1, clock=clock)
    v = TokenVerifier({server.issuer: cache}, leeway=0, clock=clock)
    try:
        exp = int(clock()) + 60
        token = rsa_key.sign(clerk_claims(server.issuer, exp=exp))
        first = await v.verify(token)
        server.keys = [rsa_key_2]  # the token's key is gone from the issuer
        clock.advance(exp - clock() - 0.01)  # past the key cache's TTL, not yet past exp
        assert await v.verify(token) is first  # answered from the verified-token cache
        assert server.hits == 1
        clock.advance(0.01)  # at exp: verified again, and its key is gone
        assert await rejected(v, token) == "unknown signing key"
        assert server.hits == 2
    finally:
        await v.aclose()
