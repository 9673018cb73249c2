"""A Clerk stand-in for API tests: a real JWKS endpoint, tokens it signs, and settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from pydantic import SecretStr

from datadiver_graph.config import Settings
from tests.jwks_server import JwksServer, TestKey, clerk_claims
from tests.webhook_support import SECRET

SERVICE_KEY = "svc-key-0123456789abcdef"


@pytest.fixture
async def clerk() -> AsyncIterator[JwksServer]:
    server = JwksServer(keys=[TestKey.rsa("key-1")])
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def token_for(clerk: JwksServer) -> Callable[[str], str]:
    def make(user_id: str) -> str:
        return clerk.keys[0].sign(clerk_claims(clerk.issuer, sub=user_id))

    return make


@pytest.fixture
def clerk_settings(settings: Settings, clerk: JwksServer) -> Settings:
    """The test database, Clerk at `clerk`, one service key, the test webhook secret."""
    return settings.model_copy(
        update={
            "clerk_issuer": [clerk.issuer],
            "service_api_keys": [SERVICE_KEY],
            "clerk_webhook_secret": SecretStr(SECRET),
        }
    )
