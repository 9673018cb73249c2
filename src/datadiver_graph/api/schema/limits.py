"""Query-shape limits: depth, aliases, tokens, directives; introspection off in production.

Each limit refuses the whole operation before it runs, with its own `extensions.code`.
"""

from __future__ import annotations

import re
from typing import Any

from graphql import ASTValidationRule, FieldNode, GraphQLError, ValidationRule
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions.max_aliases import create_validator as aliases_validator
from strawberry.extensions.query_depth_limiter import create_validator as depth_validator

from datadiver_graph.config import Settings

QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
TOO_MANY_TOKENS = "TOO_MANY_TOKENS"
TOO_MANY_DIRECTIVES = "TOO_MANY_DIRECTIVES"
INTROSPECTION_DISABLED = "INTROSPECTION_DISABLED"

# Strawberry's and graphql-core's limit errors carry no code; they are recognised by text.
# tests/test_limits.py pins each pattern, so an upgrade that rewords one fails loudly.
_MESSAGE_CODES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"exceeds maximum operation depth"), QUERY_TOO_DEEP),
    (re.compile(r"aliases found\. Allowed"), TOO_MANY_ALIASES),
    (re.compile(r"Document contains more than \d+ tokens"), TOO_MANY_TOKENS),
    (re.compile(r"introspection", re.IGNORECASE), INTROSPECTION_DISABLED),
)


def limit_code(message: str) -> str | None:
    for pattern, code in _MESSAGE_CODES:
        if pattern.search(message):
            return code
    return None


def _directives_rule(limit: int) -> type[ValidationRule]:
    class MaxDirectivesPerField(ValidationRule):
        """Repeated directives on one field make graphql-core do quadratic work."""

        def enter_field(self, node: FieldNode, *_args: Any) -> None:
            count = len(node.directives or ())
            if count > limit:
                self.report_error(
                    GraphQLError(
                        f"field '{node.name.value}' has {count} directives; "
                        f"at most {limit} are allowed",
                        node,
                        extensions={"code": TOO_MANY_DIRECTIVES},
                    )
                )

    return MaxDirectivesPerField


def validation_rules(settings: Settings) -> list[type[ASTValidationRule]]:
    """Our rules, on top of the specification's. Built once per configuration."""
    rules: list[type[ASTValidationRule]] = [
        depth_validator(settings.max_query_depth, None, None),
        aliases_validator(settings.max_aliases),
        _directives_rule(settings.max_directives_per_field),
    ]
    if settings.is_production:
        rules.append(NoSchemaIntrospectionCustomRule)
    return rules
