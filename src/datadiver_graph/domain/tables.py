"""The public tables, and how each one's records are keyed, validated and announced."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datadiver_graph.domain import payments, sessions, users
from datadiver_graph.domain.records import Record
from datadiver_graph.storage import mongo as db


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    record: type[Record]
    key_field: str  # the stored field with a unique index
    channels: Callable[[Any], tuple[str, ...]]
    event_kind: str
    # Fills fields that older exports (Convex's) may lack, from fields they do have.
    defaults: Callable[[dict[str, Any]], None]
    # Stored fields holding ids the API looks records up by: an imported value must pass the
    # same check as one from a client, or the record could never be read back.
    id_fields: tuple[str, ...] = ()


def _user_defaults(doc: dict[str, Any]) -> None:
    if "createdAt" in doc:
        doc.setdefault("updatedAt", doc["createdAt"])


def _session_defaults(doc: dict[str, Any]) -> None:
    if "createdAt" in doc:
        doc.setdefault("lastActivity", doc["createdAt"])
    if "lastActivity" in doc:
        doc.setdefault("updatedAt", doc["lastActivity"])


def _no_defaults(doc: dict[str, Any]) -> None:
    return None


TABLES: dict[str, Table] = {
    db.USERS: Table(
        name=db.USERS,
        record=users.User,
        key_field="externalId",
        channels=lambda user: users.channels(user.external_id),
        event_kind="user.imported",
        defaults=_user_defaults,
        id_fields=("externalId",),
    ),
    db.SESSIONS: Table(
        name=db.SESSIONS,
        record=sessions.Session,
        key_field="sessionId",
        channels=sessions.channels,
        event_kind="session.imported",
        defaults=_session_defaults,
        id_fields=("sessionId", "userId"),
    ),
    db.PAYMENT_ATTEMPTS: Table(
        name=db.PAYMENT_ATTEMPTS,
        record=payments.PaymentAttempt,
        key_field="payment_id",
        channels=payments.channels,
        event_kind="payment.imported",
        defaults=_no_defaults,
        id_fields=("userId",),
    ),
}


def get_table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; expected one of {', '.join(TABLES)}") from None
