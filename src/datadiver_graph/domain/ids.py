"""Validation of the external identifiers clients pass in (Clerk user ids, session ids)."""

from __future__ import annotations

import re

from datadiver_graph.domain.errors import InvalidInput

_ID = re.compile(r"[A-Za-z0-9_\-:.@|]{1,128}")


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidInput(f"{what} must be 1-128 characters of letters, digits and _ - : . @ |")
    return value
