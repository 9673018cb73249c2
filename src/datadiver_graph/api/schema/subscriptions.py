"""Subscription resolvers: the current value first, then every change (see domain.live).

Each returns a LiveSource: the domain's live view of what was asked for, and how to show
its value as a GraphQL type. The permission classes have run before the resolver.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from functools import partial
from typing import Any, TypeVar

import strawberry
from strawberry.types.nodes import SelectedField, Selection

from datadiver_graph.api.schema.billing_types import BillingState
from datadiver_graph.api.schema.context import Info
from datadiver_graph.api.schema.live_source import (
    SLOW_CONSUMER_CLOSE_CODE,
    SLOW_CONSUMER_REASON,
    LiveSource,
)
from datadiver_graph.api.schema.permissions import ActsForUser, IsUser, OwnsSession
from datadiver_graph.api.schema.types import PaymentAttempt, Session, User
from datadiver_graph.domain import live

__all__ = ["SLOW_CONSUMER_CLOSE_CODE", "SLOW_CONSUMER_REASON", "Subscription"]

R = TypeVar("R")
G = TypeVar("G")


def _or_none(convert: Callable[[R], G]) -> Callable[[R | None], G | None]:
    def show(record: R | None) -> G | None:
        return None if record is None else convert(record)

    return show


# Module-level, so that a live subscription does not hold a closure of its own.
_show_user = _or_none(User.from_record)
_show_session = _or_none(Session.from_record)
_show_payment = _or_none(PaymentAttempt.from_record)


def _show_sessions(found: tuple[Any, ...]) -> list[Session]:
    return [Session.from_record(session) for session in found]


def _show_user_context(context: live.UserContext) -> User | None:
    if context.user is None:
        return None
    return User.from_record(context.user, billing_known=context.billing)


# User fields read from the billing record: a subscription selecting any of them follows
# the user's billing channel too.
_BILLING_FIELDS = frozenset({"plan", "billingStatus", "hasFeature"})


def _selects_any(selections: list[Selection], names: frozenset[str]) -> bool:
    """Whether these selections (fragments included, at this level) name any of `names`."""
    for selection in selections:
        if isinstance(selection, SelectedField):
            if selection.name in names:
                return True
        elif _selects_any(selection.selections, names):
            return True
    return False


def _ends_with(info: Info) -> str | None:
    identity = info.context.identity
    return None if identity.is_service else identity.user_id


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=[IsUser], description="The signed-in user; completes on deletion."
    )
    def current_user(self, info: Info) -> AsyncIterable[User | None]:
        user_id = info.context.identity.user_id
        assert user_id is not None  # IsUser guarantees it
        view = live.UserView(info.context.store, user_id)
        return LiveSource(view, _show_user, info.context.request)

    @strawberry.subscription(
        permission_classes=[ActsForUser],
        description=(
            "Any user, for a service key (a signed-in user: only themselves), as `getUser` "
            "reads it: the current value (null when unknown or deleted), then each change, "
            "a Clerk Billing change included when `plan`, `billingStatus` or `hasFeature` is "
            "selected. Completes when the user is deleted."
        ),
    )
    def user(self, info: Info, user_id: str) -> AsyncIterable[User | None]:
        follow_billing = any(
            _selects_any(field.selections, _BILLING_FIELDS) for field in info.selected_fields
        )
        view = live.UserContextView(info.context.store, user_id, follow_billing=follow_billing)
        return LiveSource(view, _show_user_context, info.context.request)

    @strawberry.subscription(permission_classes=[OwnsSession])
    def session(self, info: Info, session_id: str) -> AsyncIterable[Session | None]:
        view = live.SessionView(info.context.store, session_id, ends_with_user=_ends_with(info))
        return LiveSource(view, _show_session, info.context.request)

    @strawberry.subscription(
        permission_classes=[ActsForUser],
        description="The user's most recently active sessions (up to MAX_QUERY_SIZE).",
    )
    def user_sessions(
        self, info: Info, user_id: str | None = None, active_only: bool = False
    ) -> AsyncIterable[list[Session]]:
        view = live.UserSessionsView(
            info.context.store,
            info.context.target_user(user_id),
            active_only=active_only,
            limit=info.context.settings.max_query_size,
            ends_with_user=_ends_with(info),
        )
        return LiveSource(view, _show_sessions, info.context.request)

    @strawberry.subscription(permission_classes=[ActsForUser])
    def latest_payment(
        self, info: Info, user_id: str | None = None
    ) -> AsyncIterable[PaymentAttempt | None]:
        view = live.LatestPaymentView(
            info.context.store,
            info.context.target_user(user_id),
            ends_with_user=_ends_with(info),
        )
        return LiveSource(view, _show_payment, info.context.request)

    @strawberry.subscription(
        permission_classes=[ActsForUser],
        description="The user's billing status and plan, then each change (Clerk webhooks).",
    )
    def billing_status(self, info: Info, user_id: str | None = None) -> AsyncIterable[BillingState]:
        target = info.context.target_user(user_id)
        view = live.BillingView(info.context.store, target, ends_with_user=_ends_with(info))
        return LiveSource(view, partial(BillingState.from_record, target), info.context.request)
