"""Per-request (or per-WebSocket-connection) context handed to every resolver."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strawberry.types import Info as StrawberryInfo

from datadiver_graph.api.schema.errors import bad_input, forbidden, unauthenticated
from datadiver_graph.auth.identity import Identity
from datadiver_graph.config import Settings
from datadiver_graph.domain.pagination import check_page_size
from datadiver_graph.domain.store import Store

DEFAULT_PAGE_SIZE = 20


@dataclass
class Context:
    store: Store
    settings: Settings
    identity: Identity
    # Why credentials that were presented did not verify; None when none were presented.
    auth_error: str | None = None
    request: Any = None
    response: Any = None
    connection_params: dict[str, Any] = field(default_factory=dict)

    def require_signed_in(self) -> Identity:
        if not self.identity.is_authenticated:
            raise unauthenticated(self.auth_error or "sign in to do this")
        return self.identity

    def target_user(self, user_id: str | None) -> str:
        """The user an operation acts for: the caller by default; a service must name one.

        Callers get here only through the ActsForUser permission, which has already
        refused a user naming someone else.
        """
        identity = self.require_signed_in()
        if identity.is_service:
            if user_id is None:
                raise bad_input("userId is required when calling with a service key")
            return user_id
        if identity.user_id is None:
            raise forbidden()
        return identity.user_id

    def page_size(self, first: int | None) -> int:
        limit = self.settings.max_query_size
        return check_page_size(first if first is not None else min(DEFAULT_PAGE_SIZE, limit), limit)


Info = StrawberryInfo[Context, None]
