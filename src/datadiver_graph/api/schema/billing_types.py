"""GraphQL views of Clerk Billing subscriptions (`domain.billing`)."""

from __future__ import annotations

import enum

import strawberry

from datadiver_graph.api.schema.scalars import DateTime
from datadiver_graph.domain import billing


@strawberry.enum(
    description=(
        "Derived from Clerk Billing: PAST_DUE when the subscription or an item is past due, "
        "else ACTIVE with an active item (the free default plan included), else CANCELED "
        "when items were canceled or ended, else NONE (no subscription, or nothing in force)."
    )
)
class BillingStatus(enum.Enum):
    ACTIVE = "ACTIVE"
    PAST_DUE = "PAST_DUE"
    CANCELED = "CANCELED"
    NONE = "NONE"

    @classmethod
    def of(cls, status: billing.BillingStatus) -> BillingStatus:
        return cls(status.value)


def _when(value: int | None) -> DateTime | None:
    return DateTime(value) if value is not None else None


@strawberry.type(description="One feature of a Clerk Billing plan: what `has({ feature })` checks.")
class Feature:
    id: str | None = strawberry.field(
        description=(
            "Clerk's feature id, the cache key (Apollo, urql): one cached Feature per Clerk "
            "feature. Null only when Clerk sent none; such a feature is cached inside its plan."
        )
    )
    slug: str = strawberry.field(
        description="What `User.hasFeature(slug:)` and Clerk's `has({ feature })` take."
    )
    name: str | None
    description: str | None

    @classmethod
    def from_record(cls, feature: billing.Feature) -> Feature:
        return cls(
            id=feature.id, slug=feature.slug, name=feature.name, description=feature.description
        )


@strawberry.type(description="A Clerk Billing plan, as the subscription item reported it.")
class Plan:
    id: str | None = strawberry.field(
        description=(
            "Clerk's plan id, the cache key (Apollo, urql): one cached Plan per Clerk plan. "
            "Null only when Clerk sent no plan id; such a plan is cached inside its parent."
        )
    )
    name: str | None
    slug: str | None
    amount: int | None = strawberry.field(description="Fee per period in minor units (cents).")
    currency: str | None
    period: str | None = strawberry.field(
        description=(
            "Billing period of the subscription item this plan came from: month or annual. "
            "A cache keeps one Plan per `id`, so where two items hold one plan with different "
            "periods (a switch from monthly to annual), read each item's `planPeriod`."
        )
    )
    is_default: bool | None = strawberry.field(description="Clerk's free default plan.")
    features: list[Feature] | None = strawberry.field(
        description=(
            "The plan's features as Clerk last sent them with a billing webhook; null until "
            "one carried them (plans stored before features were kept, or a payload without "
            "them). An empty list is a plan with no features."
        )
    )

    @classmethod
    def from_record(cls, plan: billing.Plan) -> Plan:
        return cls(
            id=plan.id,
            name=plan.name,
            slug=plan.slug,
            amount=plan.amount,
            currency=plan.currency,
            period=plan.period,
            is_default=plan.is_default,
            features=(
                [Feature.from_record(feature) for feature in plan.features]
                if plan.features is not None
                else None
            ),
        )


def _plan(plan: billing.Plan | None) -> Plan | None:
    return Plan.from_record(plan) if plan is not None else None


@strawberry.type(description="One item of a Clerk Billing subscription: a plan for a period.")
class SubscriptionItem:
    id: str = strawberry.field(description="Clerk's subscription item id, the cache key.")
    status: str | None = strawberry.field(
        description="Clerk's status: active, past_due, canceled, ended, upcoming, ..."
    )
    plan: Plan | None
    plan_period: str | None
    period_start: DateTime | None
    period_end: DateTime | None
    canceled_at: DateTime | None
    past_due_at: DateTime | None
    updated_at: DateTime | None = strawberry.field(description="Clerk's updated_at.")

    @classmethod
    def from_record(cls, item: billing.Item) -> SubscriptionItem:
        return cls(
            id=item.id,
            status=item.status,
            plan=_plan(item.plan),
            plan_period=item.plan_period,
            period_start=_when(item.period_start),
            period_end=_when(item.period_end),
            canceled_at=_when(item.canceled_at),
            past_due_at=_when(item.past_due_at),
            updated_at=_when(item.updated_at),
        )


@strawberry.type(description="A payer's Clerk Billing subscription as Clerk last reported it.")
class BillingSubscription:
    id: strawberry.ID = strawberry.field(
        description=(
            "Cache key (Apollo, urql): this payer's billing record, one per payer, unchanged "
            "for its lifetime, also before Clerk's subscription id is known. Not Clerk's id: "
            "that is `subscriptionId`."
        )
    )
    subscription_id: str | None = strawberry.field(
        description=(
            "Clerk's subscription id; null until a subscription event arrived. Not a cache "
            "key: key on `id`."
        )
    )
    user_id: str | None = strawberry.field(description="Null when an organization pays.")
    organization_id: str | None
    status: str | None = strawberry.field(description="Clerk's subscription status.")
    billing_status: BillingStatus
    plan: Plan | None = strawberry.field(description="The plan in force now, if any.")
    items: list[SubscriptionItem]
    updated_at: DateTime | None = strawberry.field(
        description="Clerk's updated_at of the subscription."
    )
    version: int

    @classmethod
    def from_record(cls, record: billing.BillingSubscription) -> BillingSubscription:
        status, plan = billing.derive(record)
        return cls(
            id=strawberry.ID(record.id),
            subscription_id=record.subscription_id,
            user_id=record.user_id,
            organization_id=record.organization_id,
            status=record.status,
            billing_status=BillingStatus.of(status),
            plan=_plan(plan),
            items=[SubscriptionItem.from_record(item) for item in record.items],
            updated_at=_when(record.subscription_updated_at),
            version=record.version,
        )


@strawberry.type(description="A user's derived billing state; sent again on every change.")
class BillingState:
    id: strawberry.ID = strawberry.field(
        description=(
            "Cache key (Apollo, urql): the user's Clerk id, the same value as `userId`, since "
            "a user has one billing state (also when there is no subscription)."
        )
    )
    user_id: str
    billing_status: BillingStatus
    plan: Plan | None
    subscription: BillingSubscription | None
    version: int = strawberry.field(description="The subscription's version; 0 when none.")

    @classmethod
    def from_record(cls, user_id: str, record: billing.BillingSubscription | None) -> BillingState:
        status, plan = billing.derive(record)
        return cls(
            id=strawberry.ID(user_id),
            user_id=user_id,
            billing_status=BillingStatus.of(status),
            plan=_plan(plan),
            subscription=BillingSubscription.from_record(record) if record else None,
            version=record.version if record else 0,
        )
