"""GraphQL over WebSocket: what both protocols need beyond strawberry's stock handlers.

- Text frames on every message (`TextFrameWebSocketAdapter`).
- Persisted documents (APQ hash, documentId) in subscribe/start messages, and refusal of
  other text under TRUSTED_DOCUMENTS_ONLY (`resolve_persisted`), on both protocols.
- Queries and mutations over the legacy graphql-ws protocol (`AnyOperationSchema`).
- HTTP's limits on every operation (`admit_operation`): the rate limit (each subscribe or
  start counts, as does each connection_init: api/http.py `on_ws_connect`), request field
  types, MAX_VARIABLES_BYTES; MAX_BODY_BYTES on each message (`too_large`).
- A malformed frame is refused as the protocol says, never with a traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping
from json import JSONDecodeError
from typing import Any, cast

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.schema import BaseSchema
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage,
    OperationMessage,
    StartMessage,
)

from datadiver_graph.api.persisted_documents import PersistedDocumentError
from datadiver_graph.api.request_rules import (
    BAD_REQUEST,
    VARIABLES_TOO_LARGE,
    coded,
    field_problem,
    rate_limited,
    variables_problem,
)
from datadiver_graph.api.schema.context import Context

log = logging.getLogger(__name__)

# Close codes: graphql-transport-ws's "too many requests", and RFC 6455's "message too big".
RATE_LIMITED_CLOSE = 4429
MESSAGE_TOO_BIG_CLOSE = 1009


def refuse_with(websocket: WebSocket, code: int, reason: str) -> None:
    """Make the refusal strawberry is about to send (4403, or 1011 after the legacy
    `connection_error`) close with `code` instead: on_ws_connect can only raise."""
    websocket.state.close_as = (code, reason)


def too_large(text: str, limit: int) -> bool:
    """Whether a message is over MAX_BODY_BYTES (as UTF-8, counted only when it may be)."""
    return len(text) > limit // 4 and len(text.encode()) > limit


class TextFrameWebSocketAdapter(ASGIWebSocketAdapter):
    """Sends every GraphQL WebSocket message as a text frame.

    Both GraphQL WebSocket protocols are text protocols: graphql-ws, Apollo, urql, `gql`
    and browsers refuse binary frames. Strawberry sends bytes whenever `encode_json`
    returns bytes (which the HTTP side wants), so the socket encodes on its own.
    """

    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc

    async def close(self, code: int, reason: str) -> None:
        code, reason = getattr(self.ws.state, "close_as", None) or (code, reason)
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return  # closed already (or the client left): nothing more to say
        await self.ws.close(code=code, reason=reason)

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object]:
        """Strawberry's, with MAX_BODY_BYTES on each message (closed with 1009)."""
        limit: int = self.view.settings.max_body_bytes  # type: ignore[attr-defined]
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                if too_large(text, limit):
                    await self.close(MESSAGE_TOO_BIG_CLOSE, f"message exceeds {limit} bytes")
                    return
                try:
                    yield self.view.decode_json(text)
                except JSONDecodeError as exc:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from exc
        except KeyError as exc:
            raise NonTextMessageReceived from exc
        except WebSocketDisconnect:
            pass


class AnyOperationSchema:
    """What the legacy handler calls `schema.subscribe`, for any operation type.

    subscriptions-transport-ws sends queries and mutations as `start` too (Apollo's legacy
    WebSocketLink and `gql` route every operation over the socket), but strawberry's legacy
    handler runs `schema.subscribe`, which allows subscriptions only and answered INTERNAL.
    `schema.stream` runs any operation: a query or mutation yields one result, then the
    handler sends `complete`, as the protocol expects.
    """

    def __init__(self, schema: BaseSchema) -> None:
        self.schema = schema

    async def subscribe(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> Any:
        return await self.schema.stream(
            query=query,
            variable_values=variable_values,
            context_value=context_value,
            root_value=root_value,
            operation_name=operation_name,
            operation_extensions=operation_extensions,
        )


class PersistedGraphQLWSHandler(BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws protocol (subscriptions-transport-ws), with persisted documents,
    running queries and mutations as well as subscriptions (AnyOperationSchema)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schema = cast(Any, AnyOperationSchema(self.schema))
        self.connection_init_received = False

    async def handle_message(self, message: OperationMessage) -> None:
        # Strawberry indexes the message as it expects it: a frame of another shape
        # would raise, and log a traceback, instead of being refused.
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return  # not a message of this protocol: ignored, as unknown types are
        kind = message["type"]
        if kind in ("start", "stop") and not isinstance(message.get("id"), str):
            await self.send_message(
                cast(Any, {"type": "error", "payload": coded("`id` must be a string", BAD_REQUEST)})
            )
            return
        await super().handle_message(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        # One connection_init per connection, as graphql-transport-ws requires: each
        # would start another keep-alive task otherwise.
        if self.connection_init_received:
            await self.websocket.close(
                code=RATE_LIMITED_CLOSE, reason="Too many initialisation requests"
            )
            return
        self.connection_init_received = True
        await super().handle_connection_init(message)

    async def handle_keep_alive(self) -> None:
        with contextlib.suppress(WebSocketDisconnected):  # the client left: handle() ends it
            await super().handle_keep_alive()

    async def handle_start(self, message: StartMessage) -> None:
        if self.connection_acknowledged:
            refusal = await admit_operation(self, message.get("payload"))
            if refusal is not None:
                error = {"type": "error", "id": message["id"], "payload": refusal}
                await self.send_message(cast(Any, error))
                return
        await super().handle_start(message)


class PersistedGraphQLTransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """The graphql-transport-ws protocol, with persisted documents.

    Strawberry's checks come first, as its handler makes them (4401 before
    connection_init, 4409 for a reused id, the subscription limit); only then is the
    document resolved, and a refusal sent as the operation's `error`.
    """

    async def handle_message(self, message: Any) -> None:
        problem = transport_message_problem(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        await super().handle_message(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        limit = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and message["id"] not in self.operations
            and (limit is None or len(self.operations) < limit)
        ):
            refusal = await admit_operation(self, message["payload"])
            if refusal is not None:
                error = {"id": message["id"], "type": "error", "payload": [refusal]}
                await self.send_message(cast(Any, error))
                return
        await super().handle_subscribe(message)


def transport_message_problem(message: object) -> str | None:
    """Why a graphql-transport-ws frame is not a message strawberry can read (it is then
    closed with 4400, as the protocol says for an invalid message); None when it is."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return "Failed to parse message"
    kind = message["type"]
    if kind in ("subscribe", "complete") and not isinstance(message.get("id"), str):
        return "Failed to parse message: `id` must be a string"
    if kind == "subscribe" and not isinstance(message.get("payload"), dict):
        return "Failed to parse message: `payload` must be an object"
    return None


async def admit_operation(handler: Any, payload: Any) -> dict[str, Any] | None:
    """The refusal of the operation a subscribe or start message asks for, else None.

    HTTP's rules, with its codes: each operation counts against the caller's rate limit
    (RATE_LIMITED), fields of the wrong type (BAD_REQUEST), MAX_VARIABLES_BYTES
    (VARIABLES_TOO_LARGE), persisted documents (resolve_persisted). Fills in `query`
    when the payload names a persisted document.
    """
    view, context = handler.view, handler.context
    params = context.connection_params if isinstance(context.connection_params, dict) else {}
    service_key = params.get("serviceKey") or params.get("X-Service-Key")
    retry_after = await view.count_request(context.request, context.identity, service_key)
    if retry_after is not None:
        return rate_limited(retry_after)
    problem = field_problem(payload)
    if problem is not None:
        return coded(problem, BAD_REQUEST)
    problem = variables_problem(payload.get("variables"), view.settings.max_variables_bytes)
    if problem is not None:
        return coded(problem, VARIABLES_TOO_LARGE)
    refusal = resolve_persisted(view, payload)
    if refusal is None and not isinstance(payload.get("query"), str):
        return coded("`query` (or a persisted document) is required", BAD_REQUEST)
    return refusal


def resolve_persisted(view: object, payload: Any) -> dict[str, object] | None:
    """Puts the document a subscribe message names (APQ hash or documentId) in its `query`;
    under TRUSTED_DOCUMENTS_ONLY refuses any other. The refusal's error, else None."""
    documents = getattr(view, "persisted", None)
    if documents is None or not isinstance(payload, dict):
        return None
    query, extensions = payload.get("query"), payload.get("extensions")
    document_id = payload.get("documentId")
    if not (extensions or document_id is not None or documents.active):
        return None
    try:
        payload["query"] = documents.resolve(query, extensions, document_id)
    except PersistedDocumentError as exc:
        return exc.formatted
    return None
