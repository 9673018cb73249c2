"""graphql-core's executor, with its per-event copies for subscriptions made independent.

graphql-core 3.3 runs each subscription event on a shallow copy of the operation's
executor, so the copies share the memo of collected sub-fields, which is keyed by lists
built anew for every event and keeps them alive: a subscription that lives for hours
grows it with every event (bench/RESULTS.md, "Figures formerly in docstrings"). Each
event gets its own memo here.
"""

from __future__ import annotations

from typing import Any

from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from datadiver_graph.fastpaths.internals import Internal

INTERNALS = (
    Internal(
        "strawberry-graphql",
        "strawberry.schema.schema:StrawberryGraphQLCoreExecutionContext",
        "",
        "executor.py",
    ),
    Internal(
        "graphql-core",
        "graphql.execution.executor:Executor",
        "build_per_event_executor",
        "executor.py",
        parameters=("payload",),
    ),
    Internal(
        "graphql-core",
        "graphql.execution.executor:Executor",
        "_relevant_sub_fields",
        "executor.py",
        instance=True,
    ),
)


class PerEventExecutionContext(StrawberryGraphQLCoreExecutionContext):
    def build_per_event_executor(self, payload: Any) -> Any:
        executor = super().build_per_event_executor(payload)
        if hasattr(executor, "_relevant_sub_fields"):
            executor._relevant_sub_fields = {}
        return executor
