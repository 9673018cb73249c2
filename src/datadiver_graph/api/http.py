"""The Starlette-facing GraphQL endpoint: HTTP (POST/GET) and WebSocket on `/graphql`.

Strawberry's `GraphQL` view through its public hooks only (context, connection_init,
body parsing, responses, GraphiQL, handler classes). fastpaths/view.py adds the direct
path on top when the fast paths are on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, cast

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError, OperationType, get_operation_ast
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.http.parse_content_type import parse_content_type
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.types.unset import UnsetType

from datadiver_graph.api.graphiql import render_page
from datadiver_graph.api.persisted_documents import (
    PersistedDocumentError,
    PersistedDocuments,
    load_manifest,
)
from datadiver_graph.api.ratelimit import identity_key
from datadiver_graph.api.request_rules import (
    BAD_REQUEST,
    SUBSCRIPTION_OVER_HTTP,
    field_problem,
    rate_limited,
    variables_problem,
)
from datadiver_graph.api.schema.context import Context
from datadiver_graph.api.schema.errors import REQUEST_ERROR_CODES, SERVICE_UNAVAILABLE
from datadiver_graph.api.schema.schema import Schema, build_schema
from datadiver_graph.api.ws import (
    RATE_LIMITED_CLOSE,
    PersistedGraphQLTransportWSHandler,
    PersistedGraphQLWSHandler,
    TextFrameWebSocketAdapter,
    refuse_with,
)
from datadiver_graph.auth.identity import AuthError, Identity, TokenVerifier, identify
from datadiver_graph.config import Settings
from datadiver_graph.domain.json_values import loads_exact

log = logging.getLogger(__name__)

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON_CONTENT_TYPES = ("application/json", GRAPHQL_RESPONSE_JSON)

# Codes for the refusals that happen before GraphQL runs (strawberry answers them as text).
HTTP_ERROR_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


class CodedHTTPException(HTTPException):
    def __init__(
        self, status_code: int, reason: str, code: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code, reason)
        self.code = code
        self.headers = headers or {}


def _error_response(exc: HTTPException) -> Response:
    code = getattr(exc, "code", None) or HTTP_ERROR_CODES.get(exc.status_code, "BAD_REQUEST")
    body = {"errors": [{"message": exc.reason, "extensions": {"code": code}}]}
    return Response(
        orjson.dumps(body),
        status_code=exc.status_code,
        media_type="application/json",
        headers=getattr(exc, "headers", None) or {},
    )


def bad_request(reason: str) -> CodedHTTPException:
    return CodedHTTPException(400, reason, BAD_REQUEST)


def check_request_fields(data: object) -> None:
    """400 BAD_REQUEST for a request (or batch item) that is not an object whose fields
    have their types, before anything reads them."""
    problem = field_problem(data)
    if problem is not None:
        raise bad_request(problem)


def _limit_body(receive: Receive, limit: int) -> Receive:
    """Refuse a body larger than `limit` while it streams in, whatever Content-Length said."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise CodedHTTPException(
                    413, f"request body exceeds {limit} bytes", "REQUEST_TOO_LARGE"
                )
        return message

    return limited


def _codes(response: Mapping[str, Any]) -> set[str]:
    return {
        (error.get("extensions") or {}).get("code", "") for error in response.get("errors") or []
    }


def _is_request_error(response: Mapping[str, Any]) -> bool:
    """Nothing executed (parse, validation or variable errors): a 4xx under the new media type.

    Such errors have no `path`; a resolver's error (even BAD_USER_INPUT) has one.
    """
    if response.get("data") is not None:
        return False
    errors = response.get("errors") or []
    return bool(errors) and all(
        "path" not in error and (error.get("extensions") or {}).get("code") in REQUEST_ERROR_CODES
        for error in errors
    )


def media_type_for(request: Request | WebSocket) -> str:
    accept = request.headers.get("accept", "")
    return GRAPHQL_RESPONSE_JSON if GRAPHQL_RESPONSE_JSON in accept else "application/json"


def http_status(response: Mapping[str, Any], media_type: str) -> tuple[int, dict[str, str]]:
    if media_type == GRAPHQL_RESPONSE_JSON and _is_request_error(response):
        return 400, {}
    if _codes(response) & {SERVICE_UNAVAILABLE}:
        # Load balancers and clients retry a 503; a 200 carrying an outage would hide it.
        return 503, {"retry-after": "1"}
    return 200, {}


def without_data(response: GraphQLHTTPResponse) -> GraphQLHTTPResponse:
    """A request error carries no `data` entry under application/graphql-response+json
    (GraphQL over HTTP; graphql-http's audit checks it)."""
    return cast(GraphQLHTTPResponse, {k: v for k, v in response.items() if k != "data"})


def _persisted_error(exc: PersistedDocumentError, media_type: str) -> Response:
    status = 200 if exc.soft and media_type != GRAPHQL_RESPONSE_JSON else exc.status
    return Response(
        orjson.dumps({"errors": [exc.formatted]}),
        status_code=status,
        media_type=media_type,
        # As Apollo Server: an APQ miss answered to a GET must not be cached on the way.
        headers={"cache-control": "private, no-cache, must-revalidate"},
    )


class GraphQLView(GraphQL[Context, None]):
    websocket_adapter_class = TextFrameWebSocketAdapter
    graphql_transport_ws_handler_class: type[BaseGraphQLTransportWSHandler[Context, None]] = (
        PersistedGraphQLTransportWSHandler
    )
    graphql_ws_handler_class = PersistedGraphQLWSHandler

    def __init__(self, settings: Settings) -> None:
        schema = build_schema(settings)
        super().__init__(
            schema,
            graphql_ide=None if settings.is_production else "graphiql",
            allow_queries_via_get=True,
            keep_alive=True,
            keep_alive_interval=15,
            connection_init_wait_timeout=timedelta(seconds=10),
            max_subscriptions_per_connection=50,
            # A browser page may open a WebSocket from the origins it may call over HTTP,
            # and from no other (the `__session` cookie would let any site subscribe).
            allowed_origins=settings.cors_allowed_origins,
        )
        self.settings = settings
        self.graphql_schema = schema
        self.persisted = _persisted_documents(settings, schema)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        limit = self.settings.max_body_bytes
        request = Request(scope, receive=_limit_body(receive, limit))
        try:
            declared = int(request.headers.get("content-length") or 0)
        except ValueError:
            declared = 0
        try:
            if declared > limit:
                raise CodedHTTPException(
                    413, f"request body exceeds {limit} bytes", "REQUEST_TOO_LARGE"
                )
            response = await self.answer(request)
        except ClientDisconnect:
            # The client went away before its request was read: nothing wrong here (an
            # ERROR would let anyone raise alerts at will). The answer goes nowhere; it
            # is what the access log records instead of a 500.
            log.info("client disconnected before its request was read")
            response = _error_response(bad_request("the client disconnected"))
        except HTTPException as exc:
            response = _error_response(exc)
        except PersistedDocumentError as exc:
            response = _persisted_error(exc, media_type_for(request))
        await response(scope, receive, send)

    async def answer(self, request: Request) -> Response:
        """The response to a GraphQL request over HTTP: strawberry's (fastpaths/view.py
        answers the common request sooner). Raises HTTPException, PersistedDocumentError."""
        return await self.run(request)

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        # A GET naming a persisted document has no `query` either: it wants the document.
        params = request.query_params
        if "extensions" in params or "documentId" in params:
            return False
        return super().should_render_graphql_ide(request)

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        if request.method == "POST":
            content_type, _ = parse_content_type(request.content_type or "")
            # Only JSON: a form or text/plain POST is a "simple" cross-site request (CSRF).
            if content_type not in JSON_CONTENT_TYPES:
                raise CodedHTTPException(
                    415,
                    "POST /graphql needs Content-Type: application/json",
                    "UNSUPPORTED_MEDIA_TYPE",
                )
            data = self.decode_json(await request.get_body())
            for item in data if isinstance(data, list) else [data]:
                check_request_fields(item)
        parsed = await super().parse_http_body(request)
        items = parsed if isinstance(parsed, list) else [parsed]
        document_ids = await self._document_ids(request, len(items))
        for item, document_id in zip(items, document_ids, strict=True):
            if item.extensions or document_id is not None or self.persisted.active:
                query = self.persisted.resolve(item.query, item.extensions, document_id)
                item.query = query if isinstance(query, str) or query is None else item.query
            if self.is_subscription(item.query, item.operation_name):
                raise bad_request(SUBSCRIPTION_OVER_HTTP)
        for item in items:
            problem = variables_problem(item.variables, self.settings.max_variables_bytes)
            if problem is not None:
                raise CodedHTTPException(413, problem, "VARIABLES_TOO_LARGE")
        return parsed

    def is_subscription(self, query: str | None, operation_name: str | None) -> bool:
        """Whether the document asks for a subscription (which HTTP does not carry: its
        stream would need a WebSocket). A document that does not parse or validate is not:
        its errors are answered as such."""
        if not isinstance(query, str):
            return False
        try:
            document, errors = self.graphql_schema.prepare(query)
        except GraphQLError:
            return False
        operation = None if errors else get_operation_ast(document, operation_name)
        return operation is not None and operation.operation == OperationType.SUBSCRIPTION

    async def _document_ids(self, request: AsyncHTTPRequestAdapter, count: int) -> list[object]:
        """Each operation's `documentId` (strawberry's request data has no field for it)."""
        if request.method == "GET":
            return [request.query_params.get("documentId")]
        body = await request.get_body()
        if b"documentId" not in body:
            return [None] * count
        data = self.decode_json(body)
        items = data if isinstance(data, list) else [data]
        return [item.get("documentId") if isinstance(item, dict) else None for item in items]

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL from this server's own files (graphiql/), never a CDN; development only."""
        return render_page(request)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        return loads_exact(data)

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
        return await self.http_context(request, response)

    async def http_context(self, request: Request | WebSocket, response: Any) -> Context:
        """The operation's context: the caller's identity, and the rate limit counted."""
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
            retry_after = await self.count_request(
                request, context.identity, request.headers.get("x-service-key")
            )
            if retry_after is not None:
                raise CodedHTTPException(
                    429,
                    "rate limit exceeded; try again later",
                    "RATE_LIMITED",
                    headers={"Retry-After": str(max(1, round(retry_after)))},
                )
        return context

    async def count_request(
        self, request: Request | WebSocket, identity: Identity, service_key: object
    ) -> float | None:
        """Count one request (an HTTP request, a WebSocket operation or connection_init)
        against the caller's budget: None when allowed, else seconds until it renews."""
        limiter = request.app.state.rate_limiter
        if limiter is None:
            return None
        key = identity_key(
            user_id=identity.user_id,
            service_key=service_key
            if identity.is_service and isinstance(service_key, str)
            else None,
            client_host=request.client.host if request.client else None,
        )
        retry_after: float | None = await limiter.hit(key)
        return retry_after

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
        # Every connection_init counts, as an HTTP request does (a flood of connections
        # would otherwise run free); refused with 4429 (api/ws.py closes with it).
        retry_after = await self.count_request(request, identity, service_key)
        if retry_after is not None:
            refuse_with(request, RATE_LIMITED_CLOSE, "rate limit exceeded")
            raise ConnectionRejectionError(rate_limited(retry_after))
        if error is not None or not identity.is_authenticated:
            # graphql-transport-ws closes with 4403 and drops this payload; the legacy
            # protocol sends it as `connection_error`, where a client shows the message.
            reason = error or "connection_init carried no credentials"
            raise ConnectionRejectionError(
                {"message": f"unauthenticated: {reason}", "extensions": {"code": "UNAUTHENTICATED"}}
            )
        context.identity = identity
        return None

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        # create_response() is not given the request; carry the negotiated media type.
        sub_response.media_type = media_type_for(request)
        return sub_response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        media_type = sub_response.media_type or "application/json"
        status, headers = 200, dict[str, str]()
        if isinstance(response_data, Mapping):
            status, headers = http_status(response_data, media_type)
            if status == 400:
                response_data = without_data(response_data)
        response = super().create_response(response_data, sub_response)
        response.headers["content-type"] = media_type
        if status != 200:
            response.status_code = status
            response.headers.update(headers)
        return response


def _persisted_documents(settings: Settings, schema: Schema) -> PersistedDocuments:
    """The APQ store and the trusted manifest, its documents parsed and validated now (the
    schema's cache keeps them: under TRUSTED_DOCUMENTS_ONLY no other text reaches it)."""

    def valid(text: str) -> bool:
        try:
            return not schema.prepare(text)[1]
        except GraphQLError:
            return False

    path = settings.trusted_documents_path
    manifest = load_manifest(path) if path is not None else {}
    invalid = sorted(key for key, text in manifest.items() if not valid(text))
    if invalid:
        log.warning(
            "%d trusted documents do not validate against this schema: %s",
            len(invalid),
            ", ".join(invalid[:5]),
        )
    return PersistedDocuments(
        manifest=manifest,
        apq_size=settings.apq_cache_size,
        trusted_only=settings.trusted_documents_only,
        validate=valid,
    )
