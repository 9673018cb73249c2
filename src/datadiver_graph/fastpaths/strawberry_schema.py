"""The graphql-core schema inside a Strawberry schema.

Strawberry has no public accessor for the `GraphQLSchema` it builds, and validating a
document needs it: the cached parse and validation (api/schema/documents.py) and the
check that a persisted document is valid before it is kept use it in both modes, the
direct path and the query plans in fast mode. This is the one read of it.
"""

from __future__ import annotations

import strawberry
from graphql import GraphQLSchema

from datadiver_graph.fastpaths.internals import Internal

INTERNALS = (
    Internal(
        "strawberry-graphql",
        "strawberry.schema.schema:Schema",
        "_schema",
        "strawberry_schema.py",
        instance=True,
    ),
)


def graphql_schema(schema: strawberry.Schema) -> GraphQLSchema:
    schema_: GraphQLSchema = schema._schema
    return schema_
