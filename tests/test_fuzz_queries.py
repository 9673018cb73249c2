"""Generated queries, valid and invalid, against the production configuration.

Whatever a client sends, the answer is never a 500, never an INTERNAL error, and every
error carries a known code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from graphql import StringValueNode
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema, nodes
from pydantic import SecretStr

from datadiver_graph.app import create_app
from datadiver_graph.config import Settings
from datadiver_graph.storage.mongo import Database
from tests.servers import serve_app

SERVICE_KEY = "fuzz-service-key-0123456789"
SCHEMA = (Path(__file__).parent.parent / "schema.graphql").read_text()
KNOWN_CODES = {
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "BAD_USER_INPUT",
    "CONFLICT",
    "SERVICE_UNAVAILABLE",
    "TIMEOUT",
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "QUERY_TOO_DEEP",
    "TOO_MANY_ALIASES",
    "TOO_MANY_TOKENS",
    "TOO_MANY_DIRECTIVES",
    "INTROSPECTION_DISABLED",
    "BAD_REQUEST",
    "REQUEST_TOO_LARGE",
    "VARIABLES_TOO_LARGE",
    "RATE_LIMITED",
}
SCALARS = {
    "JSON": st.builds(
        nodes.String, st.text(max_size=20)
    ),  # a string is valid JSON; the domain must refuse it where an object is needed
    "DateTime": st.just(StringValueNode(value="2026-01-01T00:00:00.000Z")),
}


def check(post: Callable[[str], httpx.Response], query: str) -> None:
    response = post(query)
    assert response.status_code < 500, (query, response.text)
    body = response.json()
    batches = body if isinstance(body, list) else [body]
    for item in batches:
        for error in item.get("errors") or []:
            code = (error.get("extensions") or {}).get("code")
            assert code in KNOWN_CODES, (query, error)
            assert "Traceback" not in error["message"]


@pytest.mark.parametrize("mode", [Mode.POSITIVE, Mode.NEGATIVE])
async def test_generated_operations_never_fail_inside(
    settings: Settings, database: Database, mode: Mode
) -> None:
    production = settings.model_copy(
        update={
            "datadiver_env": "production",
            "clerk_issuer": ["https://clerk.example.com"],
            "clerk_webhook_secret": SecretStr("whsec_" + "A" * 32),
            "service_api_keys": [SERVICE_KEY],
            "rate_limit_per_minute": 0,
        }
    )
    async with serve_app(create_app(production)) as url:
        with httpx.Client(base_url=url, timeout=10) as client:

            def post(query: str) -> httpx.Response:
                return client.post(
                    "/graphql",
                    json={"query": query},
                    headers={"x-service-key": SERVICE_KEY},
                )

            @hypothesis_settings(
                max_examples=120,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                database=None,
            )
            @given(from_schema(SCHEMA, custom_scalars=SCALARS, mode=mode))
            def run(query: str) -> None:
                check(post, query)

            await asyncio.to_thread(run)
