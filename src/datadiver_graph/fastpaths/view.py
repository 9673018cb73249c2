"""The GraphQL view with the fast paths: the direct path over HTTP, and the lean
graphql-transport-ws handler.

The stock view (api/http.py) answers every request through strawberry. This one first
offers an HTTP request to the direct path (direct.py), which answers the common one, a
known-valid query or mutation, without strawberry's per-operation machinery, and leaves
everything else (errors included) to the stock view, which answers it as always.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from strawberry.http import process_result

from datadiver_graph.api.http import (
    JSON_CONTENT_TYPES,
    GraphQLView,
    check_request_fields,
    http_status,
    media_type_for,
    without_data,
)
from datadiver_graph.domain.json_values import loads_exact
from datadiver_graph.fastpaths.direct import execute_prepared, prepare_operation
from datadiver_graph.fastpaths.ws_handler import LiveTransportWSHandler

# Extensions the direct path may ignore: the APQ hash (resolved before it runs) and the
# client name Apollo Client 4 adds. Any other makes strawberry answer.
_DIRECT_EXTENSIONS = frozenset({"persistedQuery", "clientLibrary"})


class FastGraphQLView(GraphQLView):
    # graphql-transport-ws subscriptions run as one task-less object each (ws_handler.py).
    graphql_transport_ws_handler_class = LiveTransportWSHandler

    async def answer(self, request: Request) -> Response:
        response = await self._run_direct(request)
        return response if response is not None else await super().answer(request)

    async def _run_direct(self, request: Request) -> Response | None:
        """One known-valid query or mutation (its text, APQ hash or documentId), on
        direct.py's path; None when it is anything else (strawberry then answers it,
        errors included). Raises PersistedDocumentError."""
        data, size = await self._direct_data(request)
        if data is None:
            return None
        check_request_fields(data)  # a wrong type is a 400 on either path
        query, variables, name = data.get("query"), data.get("variables"), data.get("operationName")
        extensions, document_id = data.get("extensions"), data.get("documentId")
        if extensions is not None and not (
            isinstance(extensions, dict) and extensions.keys() <= _DIRECT_EXTENSIONS
        ):
            return None
        if extensions or document_id is not None or self.persisted.active:
            query = self.persisted.resolve(query, extensions, document_id)
        if not (
            isinstance(query, str)
            and (variables is None or isinstance(variables, dict))
            and (name is None or isinstance(name, str))
        ):
            return None
        limit = self.settings.max_variables_bytes
        if variables and size > limit and len(orjson.dumps(variables)) > limit:
            return None
        prepared = prepare_operation(self.graphql_schema, query, name)
        if prepared is None or (request.method == "GET" and prepared.kind != "query"):
            return None
        context = await self.http_context(request, response=None)
        result = await execute_prepared(self.graphql_schema, prepared, variables, context)
        media_type = media_type_for(request)
        payload = process_result(result)
        status, headers = http_status(payload, media_type)
        if status == 400:
            payload = without_data(payload)
        return Response(
            self.encode_json(payload), status_code=status, media_type=media_type, headers=headers
        )

    async def _direct_data(self, request: Request) -> tuple[dict[str, Any] | None, int]:
        """The request's GraphQL parameters (a POSTed JSON object, or a GET's query string)
        and their size; None for anything the direct path leaves to strawberry."""
        if request.method == "GET":
            params = request.query_params
            data: dict[str, Any] = dict(params)
            try:
                for key in ("variables", "extensions"):
                    if params.get(key):
                        data[key] = loads_exact(params[key])
            except ValueError:
                return None, 0
            return data, len(request.url.query)
        if request.method != "POST":
            return None, 0
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type not in JSON_CONTENT_TYPES:
            return None, 0
        body = await request.body()  # kept by the request for strawberry, should it answer
        try:
            data = loads_exact(body)
        except ValueError:
            return None, 0
        return (data, len(body)) if isinstance(data, dict) else (None, 0)
