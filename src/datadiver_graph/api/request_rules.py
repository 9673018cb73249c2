"""What a GraphQL request must look like before anything reads it, and the refusals both
transports share (HTTP answers them with a status, WebSocket with an `error` message).

One set of rules for POST, GET and both WebSocket protocols, so a client meets the same
limits and codes whichever way it calls.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

BAD_REQUEST = "BAD_REQUEST"
RATE_LIMITED = "RATE_LIMITED"
VARIABLES_TOO_LARGE = "VARIABLES_TOO_LARGE"
REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
SUBSCRIPTION_OVER_HTTP = "subscriptions need a WebSocket (graphql-transport-ws or graphql-ws)"

# What each request field may be (GraphQL over HTTP, "Request parameters"); `documentId`
# names a trusted document. Null stands for absent.
_FIELD_TYPES: dict[str, tuple[type, str]] = {
    "query": (str, "a string"),
    "variables": (dict, "an object"),
    "operationName": (str, "a string"),
    "extensions": (dict, "an object"),
    "documentId": (str, "a string"),
}


def field_problem(data: object) -> str | None:
    """Why `data` is not a well-formed request (one item of a batch, or a WebSocket
    subscribe's payload); None when it is."""
    if not isinstance(data, dict):
        return "a GraphQL request must be a JSON object"
    for name, (kind, described) in _FIELD_TYPES.items():
        value = data.get(name)
        if value is not None and not isinstance(value, kind):
            return f"`{name}` must be {described} or null"
    return None


def variables_problem(variables: object, limit: int) -> str | None:
    """Why the variables are refused (MAX_VARIABLES_BYTES); None when they fit."""
    if not variables:
        return None
    try:
        size = len(orjson.dumps(variables))
    except TypeError:  # an integer past 64 bits, which the domain refuses by name
        size = len(json.dumps(variables))
    return f"variables exceed {limit} bytes" if size > limit else None


def coded(message: str, code: str, **extensions: Any) -> dict[str, Any]:
    """A GraphQL error as sent: its message and `extensions.code`."""
    return {"message": message, "extensions": {"code": code, **extensions}}


def rate_limited(retry_after: float) -> dict[str, Any]:
    """The error of an operation the rate limit refused (over HTTP, a 429 says it)."""
    seconds = max(1, round(retry_after))
    return coded(f"rate limit exceeded; try again in {seconds} s", RATE_LIMITED, retryAfter=seconds)
