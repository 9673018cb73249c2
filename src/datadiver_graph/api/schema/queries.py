"""Query resolvers: each checks nothing itself (permissions do) and calls one domain function."""

from __future__ import annotations

import strawberry

from datadiver_graph.api.schema.billing_types import BillingSubscription
from datadiver_graph.api.schema.context import Info
from datadiver_graph.api.schema.errors import unauthenticated
from datadiver_graph.api.schema.permissions import ActsForUser, OwnsSession, checked_session
from datadiver_graph.api.schema.types import Connection, PaymentAttempt, Session, User, connection
from datadiver_graph.domain import billing, payments, sessions, users


@strawberry.type
class Query:
    @strawberry.field(
        description="The signed-in user; null when signed out (or for a service key)."
    )
    async def get_current_user(self, info: Info) -> User | None:
        context = info.context
        if context.auth_error is not None:
            raise unauthenticated(context.auth_error)
        if context.identity.user_id is None:
            return None
        user = await users.get_by_external_id(context.store, context.identity.user_id)
        return User.from_record(user) if user else None

    @strawberry.field(
        permission_classes=[ActsForUser],
        description=(
            "Any user, for a service key (the AI backend's user context); a signed-in user "
            "may name only themselves. Null when the user is unknown or was deleted in Clerk."
        ),
    )
    async def get_user(self, info: Info, user_id: str) -> User | None:
        user = await users.get_unless_deleted(info.context.store, user_id)
        return User.from_record(user) if user else None

    @strawberry.field(
        permission_classes=[ActsForUser],
        description="A user's sessions, newest activity first.",
    )
    async def get_user_sessions(
        self,
        info: Info,
        user_id: str | None = None,
        active_only: bool = False,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Session]:
        page = await sessions.list_for_user(
            info.context.store,
            info.context.target_user(user_id),
            active_only=active_only,
            first=info.context.page_size(first),
            after=after,
        )
        result: Connection[Session] = connection(page, Session.from_record)
        return result

    @strawberry.field(permission_classes=[OwnsSession], description="Null when it does not exist.")
    async def get_session(self, info: Info, session_id: str) -> Session | None:
        session = await checked_session(info, session_id)
        return Session.from_record(session) if session else None

    @strawberry.field(permission_classes=[ActsForUser])
    async def get_latest_payment(
        self, info: Info, user_id: str | None = None
    ) -> PaymentAttempt | None:
        attempt = await payments.latest_for_user(
            info.context.store, info.context.target_user(user_id)
        )
        return PaymentAttempt.from_record(attempt) if attempt else None

    @strawberry.field(
        permission_classes=[ActsForUser], description="A user's payment attempts, newest first."
    )
    async def get_payment_attempts(
        self,
        info: Info,
        user_id: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[PaymentAttempt]:
        page = await payments.list_for_user(
            info.context.store,
            info.context.target_user(user_id),
            first=info.context.page_size(first),
            after=after,
        )
        result: Connection[PaymentAttempt] = connection(page, PaymentAttempt.from_record)
        return result

    @strawberry.field(
        permission_classes=[ActsForUser],
        description="The user's Clerk Billing subscription with its items; null when none.",
    )
    async def get_subscription(
        self, info: Info, user_id: str | None = None
    ) -> BillingSubscription | None:
        found = await billing.get_for_user(info.context.store, info.context.target_user(user_id))
        return BillingSubscription.from_record(found) if found else None
