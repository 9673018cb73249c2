"""Request errors (nothing executed) carry no `data` entry under
application/graphql-response+json, on both paths (GraphQL over HTTP; graphql-http's audit
checks it: tests/clients/graphql-http-audit.test.mjs)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

GRAPHQL_JSON = "application/graphql-response+json"


async def post(http: httpx.AsyncClient, body: Any, accept: str) -> httpx.Response:
    return await http.post("/graphql", json=body, headers={"accept": accept})


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{", "GRAPHQL_PARSE_FAILED"),
        ("{ 4f }", "GRAPHQL_PARSE_FAILED"),
        ("{ noSuchField }", "GRAPHQL_VALIDATION_FAILED"),
    ],
)
async def test_parse_and_validation_errors_have_no_data_entry(
    http: httpx.AsyncClient, query: str, code: str
) -> None:
    for response in (
        await post(http, {"query": query}, GRAPHQL_JSON),
        await http.get("/graphql", params={"query": query}, headers={"accept": GRAPHQL_JSON}),
    ):
        assert response.status_code == 400
        assert response.headers["content-type"] == GRAPHQL_JSON
        body = response.json()
        assert "data" not in body, body
        assert [e["extensions"]["code"] for e in body["errors"]] == [code]


async def test_variable_errors_on_the_direct_path_have_no_data_entry(
    http: httpx.AsyncClient,
) -> None:
    query = "query($id: String!) { getSession(sessionId: $id) { sessionId } }"
    response = await post(http, {"query": query, "variables": {"id": [1]}}, GRAPHQL_JSON)
    assert response.status_code == 400
    assert "data" not in response.json()
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == ["BAD_USER_INPUT"]


async def test_application_json_keeps_its_200_and_answers_as_before(
    http: httpx.AsyncClient,
) -> None:
    response = await post(http, {"query": "{ noSuchField }"}, "application/json")
    assert response.status_code == 200
    assert response.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


async def test_a_result_keeps_its_data(http: httpx.AsyncClient) -> None:
    response = await post(http, {"query": "{ __typename }"}, GRAPHQL_JSON)
    assert response.status_code == 200 and response.json() == {"data": {"__typename": "Query"}}
