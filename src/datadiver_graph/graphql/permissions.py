"""Authorization: a user reaches only their own data; a service key reaches anyone's.

Resolvers never repeat these checks; each field names the permissions it needs.
"""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from datadiver_graph.domain import sessions
from datadiver_graph.graphql.context import Info
from datadiver_graph.graphql.errors import forbidden


class IsSignedIn(BasePermission):
    """A verified user or service caller; raises UNAUTHENTICATED with the reason otherwise."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        info.context.require_signed_in()
        return True


class ActsForUser(BasePermission):
    """`userId` may name only the caller (a service key may name anyone)."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        identity = info.context.require_signed_in()
        user_id = kwargs.get("user_id")
        if identity.is_service or user_id is None or user_id == identity.user_id:
            return True
        raise forbidden("you may only access your own data")


class IsUser(BasePermission):
    """A signed-in user acting for themselves: service keys have no user record to change."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        identity = info.context.require_signed_in()
        if identity.is_service or identity.user_id is None:
            raise forbidden("only a signed-in user can do this")
        return True


class OwnsSession(BasePermission):
    """The session named by `sessionId` belongs to the caller (or the caller is a service).

    A session that does not exist passes: the resolver answers null or NOT_FOUND.
    """

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        identity = info.context.require_signed_in()
        if identity.is_service:
            return True
        session = await sessions.get(info.context.store, kwargs["session_id"])
        if session is not None and session.user_id != identity.user_id:
            raise forbidden("this session belongs to another user")
        return True
