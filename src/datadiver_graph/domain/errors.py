"""Errors the domain raises; the API layers map `code` to their own vocabulary."""

from __future__ import annotations


class DomainError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError):
    code = "BAD_USER_INPUT"


class NotFound(DomainError):
    code = "NOT_FOUND"


class Conflict(DomainError):
    """A concurrent writer kept winning, or the write contradicts stored state."""

    code = "CONFLICT"
