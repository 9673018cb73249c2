"""GraphQL over WebSocket: what both protocols need beyond strawberry's stock handlers.

- Text frames on every message (`TextFrameWebSocketAdapter`).
- Persisted documents (APQ hash, documentId) in subscribe/start messages, and refusal of
  other text under TRUSTED_DOCUMENTS_ONLY (`resolve_persisted`), on both protocols.
- Queries and mutations over the legacy graphql-ws protocol (`AnyOperationSchema`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import orjson
from starlette.websockets import WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema import BaseSchema
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import StartMessage

from datadiver_graph.api.persisted_documents import PersistedDocumentError
from datadiver_graph.api.schema.context import Context


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

    async def handle_start(self, message: StartMessage) -> None:
        if self.connection_acknowledged:
            refusal = resolve_persisted(self.view, message["payload"])
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

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        limit = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and message["id"] not in self.operations
            and (limit is None or len(self.operations) < limit)
        ):
            refusal = resolve_persisted(self.view, message["payload"])
            if refusal is not None:
                error = {"id": message["id"], "type": "error", "payload": [refusal]}
                await self.send_message(cast(Any, error))
                return
        await super().handle_subscribe(message)


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
