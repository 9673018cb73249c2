"""The executable schema. Built once per process; parse and validation results are cached."""

from __future__ import annotations

from functools import cache, partial

import strawberry
from graphql import GraphQLError
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from datadiver_graph.graphql.errors import PARSE_FAILED, ErrorCodes, error_code
from datadiver_graph.graphql.mutations import Mutation
from datadiver_graph.graphql.queries import Query
from datadiver_graph.graphql.scalars import SCALAR_MAP
from datadiver_graph.graphql.subscriptions import Subscription

CACHE_SIZE = 1024


class Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # ErrorCodes already logged the unexpected ones with their traceback; the rest
        # (FORBIDDEN, validation, ...) are the client's business, not the operator's.
        # A syntax error returns before any extension sees the result: code it here.
        unparsed = execution_context is None or execution_context.graphql_document is None
        for error in errors:
            if unparsed and error_code(error) is None:
                error.extensions = {**(error.extensions or {}), "code": PARSE_FAILED}


@cache
def build_schema(*, production: bool = False) -> Schema:
    return Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(scalar_map=SCALAR_MAP),
        extensions=[
            # Factories: extensions hold per-operation state, so each operation gets its own
            # instance; the parse/validation LRU caches behind them are shared per process.
            partial(ParserCache, maxsize=CACHE_SIZE),
            partial(ValidationCache, maxsize=CACHE_SIZE),
            partial(ErrorCodes, mask_internal=production),
        ],
    )


def schema_sdl() -> str:
    return build_schema().as_str() + "\n"
