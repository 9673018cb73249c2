"""Channel names and the event codec (publish/subscribe lives in `fanout`).

Messages are JSON text (broadcaster's Redis backend carries strings) and carry the
changed record, so a subscriber never needs a database read to deliver a change.
"""

from __future__ import annotations

import os
import socket
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson


def user_channel(external_id: str) -> str:
    return f"user:{external_id}"


def session_channel(session_id: str) -> str:
    return f"session:{session_id}"


def user_sessions_channel(external_id: str) -> str:
    return f"user-sessions:{external_id}"


def payments_channel(external_id: str) -> str:
    return f"payments:{external_id}"


def billing_channel(external_id: str) -> str:
    """The user's derived Clerk Billing state (`domain.billing`)."""
    return f"billing:{external_id}"


# Every process listens here: a message lists channel prefixes (`user:`, `session:`, ...),
# and each local subscriber of a channel with one of them re-reads its value (RESYNC). What
# a bulk import publishes instead of one event per document.
REREAD_CHANNEL = "reread"


def encode_reread(prefixes: tuple[str, ...]) -> str:
    return orjson.dumps(list(prefixes)).decode()


def decode_reread(message: str) -> tuple[str, ...]:
    prefixes = orjson.loads(message)
    if not isinstance(prefixes, list) or not all(isinstance(p, str) and p for p in prefixes):
        raise ValueError("a re-read message is a list of channel prefixes")
    return tuple(prefixes)


# Every change is also announced here, as a small summary, for operators: the console's
# live feed and `datadiver-graph logs` (console/). One channel, so a watcher subscribes once.
ADMIN_CHANNEL = "admin:changes"

# What made the change, when the caller says so ("webhook", "console"); else
# `change_summary` tells a request's change ("graphql") from one made without a request ("cli").
change_source: ContextVar[str | None] = ContextVar("datadiver_change_source", default=None)

PROCESS = f"{socket.gethostname()}:{os.getpid()}"

# Channel prefixes that name a user, in the order a summary looks for one.
_USER_PREFIXES = ("user:", "user-sessions:", "payments:", "billing:")


def change_summary(
    kind: str, record: dict[str, Any], channels: tuple[str, ...], request_id: str | None
) -> dict[str, Any]:
    """What an operator sees of one change: its type, ids, version, time and source.

    Ids only, never the record's contents (names, emails, metadata): the feed is for
    following what happens, the console's document view is for reading a record.
    """
    user_id = next((ch.split(":", 1)[1] for ch in channels if ch.startswith(_USER_PREFIXES)), None)
    session_id = next((ch.split(":", 1)[1] for ch in channels if ch.startswith("session:")), None)
    source = change_source.get() or ("graphql" if request_id is not None else "cli")
    return {
        "type": kind,
        "id": record.get("_id"),
        "userId": user_id,
        "sessionId": session_id,
        "paymentId": record.get("payment_id"),
        "version": record.get("version"),
        "time": int(time.time() * 1000),
        "source": source,
        "process": PROCESS,
        "requestId": request_id,
    }


def reread_summary(prefixes: tuple[str, ...], request_id: str | None) -> dict[str, Any]:
    """A bulk write's one announcement (an import), in the shape of `change_summary`."""
    summary = change_summary("reread", {}, (), request_id)
    summary["channels"] = list(prefixes)
    return summary


@dataclass(frozen=True, slots=True)
class Event:
    """`kind` is e.g. "session.updated"; `record` is the stored document after the change.

    A None record means "changed, re-read it": used where a backend cannot carry the record.
    """

    kind: str
    record: dict[str, Any] | None

    def encode(self) -> str:
        return orjson.dumps({"kind": self.kind, "record": self.record}).decode()

    @classmethod
    def decode(cls, message: str) -> Event:
        data = orjson.loads(message)
        return cls(kind=data["kind"], record=data["record"])
