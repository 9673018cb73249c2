"""The Starlette-facing GraphQL endpoint: HTTP (POST/GET) and WebSocket on `/graphql`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.types.unset import UnsetType

from datadiver_graph.auth import AuthError, Identity, TokenVerifier, identify
from datadiver_graph.config import Settings
from datadiver_graph.graphql.context import Context
from datadiver_graph.graphql.errors import REQUEST_ERROR_CODES
from datadiver_graph.graphql.schema import build_schema

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"


def _is_request_error(response: Mapping[str, Any]) -> bool:
    """Nothing executed (parse, validation or variable errors): a 4xx under the new media type."""
    if response.get("data") is not None:
        return False
    errors = response.get("errors") or []
    return bool(errors) and all(
        (error.get("extensions") or {}).get("code") in REQUEST_ERROR_CODES for error in errors
    )


class GraphQLView(GraphQL[Context, None]):
    def __init__(self, settings: Settings) -> None:
        super().__init__(
            build_schema(production=settings.is_production),
            graphql_ide=None if settings.is_production else "graphiql",
            allow_queries_via_get=True,
            keep_alive=True,
            keep_alive_interval=15,
            connection_init_wait_timeout=timedelta(seconds=10),
            max_subscriptions_per_connection=50,
        )
        self.settings = settings

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)

    async def _authenticate(
        self,
        verifier: TokenVerifier,
        *,
        authorization: str | None,
        cookie: str | None,
        service_key: str | None,
    ) -> tuple[Identity, str | None]:
        try:
            identity = await identify(
                verifier,
                self.settings,
                authorization=authorization,
                session_cookie=cookie,
                service_key=service_key,
            )
        except AuthError as exc:
            return Identity.anonymous(), str(exc)
        return identity, None

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        state = request.app.state
        context = Context(
            store=state.store,
            settings=self.settings,
            identity=Identity.anonymous(),
            request=request,
            response=response,
        )
        if isinstance(request, Request):
            context.identity, context.auth_error = await self._authenticate(
                state.verifier,
                authorization=request.headers.get("authorization"),
                cookie=request.cookies.get("__session"),
                service_key=request.headers.get("x-service-key"),
            )
        return context

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """Credentials come from connectionParams; the identity then holds for the connection."""
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        authorization = params.get("Authorization") or params.get("authorization")
        token = params.get("authToken")
        if authorization is None and isinstance(token, str):
            authorization = f"Bearer {token}"
        service_key = params.get("serviceKey") or params.get("X-Service-Key")
        request: WebSocket = context.request
        identity, error = await self._authenticate(
            request.app.state.verifier,
            authorization=authorization if isinstance(authorization, str) else None,
            cookie=request.cookies.get("__session"),
            service_key=service_key if isinstance(service_key, str) else None,
        )
        if error is not None or not identity.is_authenticated:
            raise ConnectionRejectionError()
        context.identity = identity
        return None

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        # create_response() is not given the request; carry the negotiated media type.
        accept = request.headers.get("accept", "")
        sub_response.media_type = (
            GRAPHQL_RESPONSE_JSON if GRAPHQL_RESPONSE_JSON in accept else "application/json"
        )
        return sub_response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        media_type = sub_response.media_type or "application/json"
        response.headers["content-type"] = media_type
        if (
            media_type == GRAPHQL_RESPONSE_JSON
            and isinstance(response_data, Mapping)
            and _is_request_error(response_data)
        ):
            response.status_code = 400
        return response
