"""Authorization: a user reaches only their own data; a service key reaches anyone's.

Resolvers never repeat these checks; each field names the permissions it needs.
"""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from datadiver_graph.api.schema.context import Info
from datadiver_graph.api.schema.errors import forbidden
from datadiver_graph.domain import sessions


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
        # Strawberry hands the permission and the resolver of a field the same Info, which
        # lives as long as that one field's execution: the resolver may use this read.
        setattr(info, _SESSION_READ, (kwargs["session_id"], session))
        if session is not None and session.user_id != identity.user_id:
            raise forbidden("this session belongs to another user")
        return True


_SESSION_READ = "_datadiver_session_read"


async def checked_session(info: Info, session_id: str) -> sessions.Session | None:
    """The session OwnsSession read for this field, else read now (a service caller)."""
    read = getattr(info, _SESSION_READ, None)
    if read is not None and read[0] == session_id:
        found: sessions.Session | None = read[1]
        return found
    return await sessions.get(info.context.store, session_id)
