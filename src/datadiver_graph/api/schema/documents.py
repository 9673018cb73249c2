"""Parse and validate each distinct query text once per process.

Clients send the same few documents over and over, so the parsed document and its
validation result (including our limits) are kept in one LRU keyed by the query text. One
extension replaces strawberry's four (token limit, extra rules, parser and validation
caches): each extension costs setup work on every operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache, partial

from graphql import (
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    parse,
    specified_rules,
    validate,
)
from strawberry.extensions import SchemaExtension

from datadiver_graph.api.schema.limits import validation_rules
from datadiver_graph.config import Settings

CACHE_SIZE = 1024

Prepared = tuple[DocumentNode, tuple[GraphQLError, ...]]


def make_preparer(
    schema: Callable[[], GraphQLSchema], rules: tuple[type[ASTValidationRule], ...], max_tokens: int
) -> Callable[[str], Prepared]:
    @lru_cache(maxsize=CACHE_SIZE)
    def prepare(query: str) -> Prepared:
        # A syntax error (or too many tokens) raises and is not cached.
        document = parse(query, max_tokens=max_tokens)
        return document, tuple(validate(schema(), document, rules))

    return prepare


class PreparedDocuments(SchemaExtension):
    def __init__(self, *, prepare: Callable[[str], Prepared], max_tokens: int) -> None:
        self._prepare = prepare
        self._max_tokens = max_tokens
        self._errors: tuple[GraphQLError, ...] = ()

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is None and context.query:
            try:
                context.graphql_document, self._errors = self._prepare(context.query)
            except GraphQLError:
                # Raised from this hook, the error escapes strawberry's handling on the
                # WebSocket path; strawberry's own parse, under the same token limit, raises
                # it again where every path reports it.
                context.parse_options["max_tokens"] = self._max_tokens
        yield

    def on_validate(self) -> Iterator[None]:
        # strawberry skips its own validation once pre_execution_errors is set.
        self.execution_context.pre_execution_errors = list(self._errors)
        yield


def document_preparer(
    settings: Settings, schema: Callable[[], GraphQLSchema]
) -> Callable[[str], Prepared]:
    """Parse (within the token limit) and validate (with our limits) a query text, cached."""
    rules = (*specified_rules, *validation_rules(settings))
    return make_preparer(schema, rules, settings.max_tokens)


def document_extension(
    prepare: Callable[[str], Prepared], max_tokens: int
) -> Callable[[], SchemaExtension]:
    return partial(PreparedDocuments, prepare=prepare, max_tokens=max_tokens)
