"""GraphQL object types: thin read-only views over domain records."""

from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar

import strawberry

from datadiver_graph.api.schema.billing_types import BillingStatus, Plan
from datadiver_graph.api.schema.context import Info
from datadiver_graph.api.schema.scalars import JSON, DateTime
from datadiver_graph.domain import billing
from datadiver_graph.domain.clock import now_ms
from datadiver_graph.domain.pagination import Page
from datadiver_graph.domain.payments import PaymentAttempt as PaymentRecord
from datadiver_graph.domain.sessions import Session as SessionRecord
from datadiver_graph.domain.users import User as UserRecord


@strawberry.type(description="A DataDiver user, synced from Clerk.")
class User:
    id: strawberry.ID = strawberry.field(
        description=(
            "Cache key (Apollo, urql): DataDiver's id of this user, fixed for its lifetime. "
            "Operations take the Clerk id, `externalId`."
        )
    )
    external_id: str = strawberry.field(
        description=(
            "Clerk user id (the JWT `sub`), what `userId` arguments take. Not the cache key: "
            "key on `id`."
        )
    )
    name: str | None
    email: str | None
    image_url: str | None
    preferences: JSON
    created_at: DateTime
    updated_at: DateTime
    version: int = strawberry.field(description="Increases by one with every change.")
    # The user's billing record, read at most once per User object (plan, billingStatus,
    # hasFeature), unless the caller already had it (`billing_known`, a live subscription).
    billing_read: strawberry.Private[asyncio.Future[billing.BillingSubscription | None] | None] = (
        None
    )
    billing_known: strawberry.Private[tuple[billing.BillingSubscription | None] | None] = None

    async def _billing(self, info: Info) -> billing.BillingSubscription | None:
        if self.billing_known is not None:
            return self.billing_known[0]
        if self.billing_read is None:
            self.billing_read = asyncio.ensure_future(
                billing.get_for_user(info.context.store, self.external_id)
            )
        return await self.billing_read

    @strawberry.field(description="The Clerk Billing plan in force now; null when none.")
    async def plan(self, info: Info) -> Plan | None:
        _, plan = billing.derive(await self._billing(info))
        return Plan.from_record(plan) if plan is not None else None

    @strawberry.field(description="Derived from the user's Clerk Billing subscription.")
    async def billing_status(self, info: Info) -> BillingStatus:
        status, _ = billing.derive(await self._billing(info))
        return BillingStatus.of(status)

    @strawberry.field(
        description=(
            "Whether the plan in force grants this feature, as Clerk's `has({ feature })` "
            "answers: `slug` (or `user:slug`) is among the features of `plan`, which is an "
            "active item's plan, else a past-due one's, else a canceled one's until its "
            "`periodEnd`. False with no plan, an ended plan, an `org:` scope, or a plan whose "
            "features Clerk has not sent yet (`plan.features` null)."
        )
    )
    async def has_feature(self, info: Info, slug: str) -> bool:
        return billing.has_feature(await self._billing(info), slug, now=now_ms())

    @classmethod
    def from_record(
        cls,
        user: UserRecord,
        billing_known: tuple[billing.BillingSubscription | None] | None = None,
    ) -> User:
        return cls(
            id=strawberry.ID(user.id),
            external_id=user.external_id,
            name=user.name,
            email=user.email,
            image_url=user.image_url,
            preferences=JSON(user.preferences),
            created_at=DateTime(user.created_at),
            updated_at=DateTime(user.updated_at),
            version=user.version,
            billing_known=billing_known,
        )


@strawberry.type(description="A chat session over one or more documents.")
class Session:
    id: strawberry.ID = strawberry.field(
        description=(
            "Cache key (Apollo, urql): DataDiver's id of this session, fixed for its lifetime. "
            "Operations take `sessionId`."
        )
    )
    session_id: str = strawberry.field(
        description=(
            "What operations take (`getSession`, `updateSession`, the `session` "
            "subscription): client-chosen or generated. Not the cache key: key on `id`."
        )
    )
    user_id: str = strawberry.field(description="Clerk user id of the owner.")
    active: bool
    metadata: JSON
    created_at: DateTime
    last_activity: DateTime
    updated_at: DateTime
    ended_at: DateTime | None
    version: int

    @classmethod
    def from_record(cls, session: SessionRecord) -> Session:
        return cls(
            id=strawberry.ID(session.id),
            session_id=session.session_id,
            user_id=session.user_id,
            active=session.active,
            metadata=JSON(session.metadata),
            created_at=DateTime(session.created_at),
            last_activity=DateTime(session.last_activity),
            updated_at=DateTime(session.updated_at),
            ended_at=DateTime(session.ended_at) if session.ended_at is not None else None,
            version=session.version,
        )


def _when(value: int | None) -> DateTime | None:
    return DateTime(value) if value is not None else None


def _json(value: object) -> JSON | None:
    return JSON(value) if value is not None else None


@strawberry.type(description="One Clerk Billing payment attempt, as Clerk reported it.")
class PaymentAttempt:
    id: strawberry.ID = strawberry.field(
        description="Cache key (Apollo, urql): DataDiver's id of this payment attempt."
    )
    payment_id: str = strawberry.field(
        description="Clerk's payment id. Not the cache key: key on `id`."
    )
    user_id: str | None = strawberry.field(description="Null when an organization paid.")
    status: str = strawberry.field(description="Clerk's status: pending, paid or failed.")
    amount: int | None = strawberry.field(description="Grand total in minor units (cents).")
    currency: str | None
    metadata: JSON
    payer: JSON | None
    totals: JSON | None
    subscription_items: JSON | None
    payment_source: JSON | None
    paid_at: DateTime | None
    failed_at: DateTime | None
    failed_reason: JSON | None
    charge_type: str | None
    billing_date: DateTime | None
    created_at: DateTime
    updated_at: DateTime | None = strawberry.field(description="Clerk's updated_at.")
    version: int

    @classmethod
    def from_record(cls, attempt: PaymentRecord) -> PaymentAttempt:
        return cls(
            id=strawberry.ID(attempt.id),
            payment_id=attempt.payment_id,
            user_id=attempt.user_id,
            status=attempt.status,
            amount=attempt.amount,
            currency=attempt.currency,
            metadata=JSON(attempt.metadata),
            payer=_json(attempt.payer),
            totals=_json(attempt.totals),
            subscription_items=_json(attempt.subscription_items),
            payment_source=_json(attempt.payment_source),
            paid_at=_when(attempt.paid_at),
            failed_at=_when(attempt.failed_at),
            failed_reason=_json(attempt.failed_reason),
            charge_type=attempt.charge_type,
            billing_date=_when(attempt.billing_date),
            created_at=DateTime(attempt.created_at),
            updated_at=_when(attempt.updated_at),
            version=attempt.version,
        )


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


NodeT = TypeVar("NodeT")


@strawberry.type
class Edge(Generic[NodeT]):
    cursor: str
    node: NodeT


@strawberry.type
class Connection(Generic[NodeT]):
    edges: list[Edge[NodeT]]
    nodes: list[NodeT]
    page_info: PageInfo


def connection(page: Page[Any], view: Any) -> Any:
    """Build Connection[View] from a domain page, converting each record with `view`."""
    nodes = [view(item) for item in page.items]
    return Connection(
        edges=[
            Edge(cursor=cursor, node=node) for cursor, node in zip(page.cursors, nodes, strict=True)
        ],
        nodes=nodes,
        page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
    )
