"""A long-lived subscription must not grow with every event it delivers.

graphql-core 3.3 shares one memo between a subscription's per-event executors and keys it
by lists built per event; PerEventExecutionContext gives each event its own. The control
case runs strawberry's default class and shows the growth this guards against.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest
import strawberry
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from datadiver_graph.fastpaths.executor import PerEventExecutionContext

# Tests a fast path's own internals: skipped under FAST_PATHS=false (conftest.py).
pytestmark = pytest.mark.fast_paths

EVENTS = 200


@strawberry.type
class Item:
    name: str
    n: int


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def items(self) -> AsyncGenerator[Item, None]:
        for n in range(EVENTS):
            yield Item(name="x", n=n)


def recording(base: type[Any]) -> tuple[type[Any], list[Any]]:
    parents: list[Any] = []

    class Recording(base):  # type: ignore[misc, valid-type]
        def build_per_event_executor(self, payload: Any) -> Any:
            parents.append(self)
            return super().build_per_event_executor(payload)

    return Recording, parents


async def memo_size_after_events(base: type[Any]) -> int:
    context_class, parents = recording(base)
    schema = strawberry.Schema(
        query=Query, subscription=Subscription, execution_context_class=context_class
    )
    stream = await schema.subscribe("subscription { items { name n } }")
    received = [result async for result in stream]  # type: ignore[union-attr]
    assert len(received) == EVENTS and received[-1].data == {"items": {"name": "x", "n": 199}}
    return len(parents[0]._relevant_sub_fields)


async def test_each_event_gets_its_own_memo() -> None:
    assert await memo_size_after_events(PerEventExecutionContext) == 0


async def test_control_the_default_executor_grows_per_event() -> None:
    grown = await memo_size_after_events(StrawberryGraphQLCoreExecutionContext)
    if grown == 0:
        pytest.skip("this graphql-core no longer shares the memo; the guard may be dropped")
    assert grown == EVENTS
