"""POST /webhooks/clerk (and the Convex path /clerk-users-webhook): Clerk's Svix-signed events.

verify the signature on the raw body -> parse -> `clerk_events.handle_delivery`, which skips a
Svix id already handled, stores the event through its domain function (which publishes it)
and then remembers the id. The handler itself only speaks HTTP.

Status codes (Svix retries every non-2xx for about 27 hours, and waits at most 15 s):

- 200 `{"status": "applied" | "stale" | "duplicate" | "ignored"}`: stored, or nothing to store.
- 400 `{"error": ...}`: bad signature or headers, not JSON, not a Clerk event, invalid data.
  Nothing is written; a warning is logged without the body.
- 409: a concurrent writer kept winning; retry.
- 413: body over 1 MiB, refused before it is parsed or verified.
- 503: no usable signing secret (nothing written, an error logged), or the database failed
  or did not answer within 10 s. An event is acknowledged only once it is stored.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import orjson
from pymongo.errors import PyMongoError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from svix.webhooks import Webhook, WebhookVerificationError

from datadiver_graph.config import Settings, SettingsError
from datadiver_graph.domain import clerk_events, webhook_deliveries
from datadiver_graph.domain.errors import Conflict, InvalidInput
from datadiver_graph.domain.events import change_source
from datadiver_graph.domain.store import Store

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
# Svix gives up on a delivery after 15 s; answer (with a 503 to retry) well before that.
PROCESSING_TIMEOUT_S = 10.0
MAX_DELIVERY_ID = 256
# Svix's headers, and the unbranded Standard Webhooks names the svix library also accepts.
SIGNATURE_HEADERS = (
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)

# The signing secret used in development when CLERK_WEBHOOK_SECRET is unset, by both the
# server and `datadiver-graph dev-webhook`. It is public (it is in this file), so it is never
# used in production: there the server refuses to start without CLERK_WEBHOOK_SECRET.
DEV_WEBHOOK_SECRET = "whsec_ZGF0YWRpdmVyLWdyYXBoLWRldi13ZWJob29rLWtleSE="


def webhook_secret(settings: Settings) -> str:
    """The Svix signing secret: CLERK_WEBHOOK_SECRET, else the development secret.

    Raises SettingsError in production when CLERK_WEBHOOK_SECRET is unset: call it at
    start-up to refuse to run without it.
    """
    configured = settings.clerk_webhook_secret
    if configured is not None and configured.get_secret_value().strip():
        return configured.get_secret_value().strip()
    if settings.is_production:
        raise SettingsError("CLERK_WEBHOOK_SECRET is required when DATADIVER_ENV=production")
    return DEV_WEBHOOK_SECRET


@functools.lru_cache(maxsize=4)
def _verifier(secret: str) -> Webhook:
    """One verifier per secret: building it decodes the secret, which showed in profiles.
    A secret that is not usable raises here every time (exceptions are not cached)."""
    return Webhook(secret)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    """The raw body, refusing more than MAX_BODY_BYTES whether or not Content-Length says so."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _TooLarge
    return bytes(body)


def _signature_headers(request: Request) -> dict[str, str]:
    """The Svix headers, in one pass over the raw ones (the first of a repeated one wins)."""
    found: dict[str, str] = {}
    for name, value in request.scope["headers"]:
        if name in _SIGNATURE_HEADER_NAMES:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found


_SIGNATURE_HEADER_NAMES = frozenset(name.encode() for name in SIGNATURE_HEADERS)

# Outcome label of a refused delivery, by status (200s carry theirs in the body).
_OUTCOMES = {400: "rejected", 409: "conflict", 413: "too_large", 503: "unavailable"}


async def clerk_webhook(request: Request) -> Response:
    """Receive one delivery, then log one line and count it, whatever became of it."""
    seen: dict[str, str] = {}
    status, text = await _receive(request, seen)
    # 200: `text` is the outcome; otherwise the reason, for the body and the log line.
    reason = None if status == 200 else text
    if reason is None:
        outcome = text
    elif reason == "invalid signature":
        outcome = "invalid_signature"
    else:
        outcome = _OUTCOMES.get(status, f"http_{status}")
    event_type = seen.get("type")
    request.app.state.metrics.observe_webhook(event_type, outcome)
    level = logging.INFO if status == 200 else logging.ERROR if status >= 500 else logging.WARNING
    if log.isEnabledFor(level):
        delivery_id = seen.get("id", "")
        log.log(
            level,
            "clerk webhook %s: %s%s",
            event_type or "(unverified)",
            outcome,
            f" ({reason})" if reason else "",
            extra={
                "event": "webhook",
                "event_type": event_type,
                # Attacker-controlled until verified: capped.
                "svix_id": delivery_id[:MAX_DELIVERY_ID],
                "outcome": outcome,
                "status": status,
                "reason": reason,
            },
        )
    answer = {"status": text} if reason is None else {"error": reason}
    delivery = webhook_deliveries.Delivery(
        outcome=outcome,
        status=status,
        verified="verified" in seen,
        svix_id=seen.get("id", "")[:MAX_DELIVERY_ID] or None,
        event_type=event_type,
        error=reason,
    )
    return Response(
        orjson.dumps(answer),
        status_code=status,
        media_type="application/json",
        background=BackgroundTask(_log_delivery, request, delivery),
    )


async def _log_delivery(request: Request, delivery: webhook_deliveries.Delivery) -> None:
    """The console's webhook log, written once Svix has its answer; a failure to write it
    is logged, never answered (the delivery itself was handled)."""
    store: Store | None = getattr(request.app.state, "store", None)
    if store is None:
        return
    try:
        await webhook_deliveries.log_delivery(store, delivery)
    except Exception as exc:
        log.warning("clerk webhook: could not log delivery: %s", type(exc).__name__)


async def _receive(request: Request, seen: dict[str, str]) -> tuple[int, str]:
    """(200, outcome) or (status, reason). Fills `seen` with the delivery id and, once
    verified, the event type, for the one line `clerk_webhook` logs (never the body: it
    has personal data)."""
    settings: Settings = request.app.state.settings
    headers = _signature_headers(request)
    delivery_id = headers.get("svix-id") or headers.get("webhook-id")
    if delivery_id:
        seen["id"] = delivery_id
    try:
        verifier = _verifier(webhook_secret(settings))
    except Exception as exc:  # SettingsError, or a secret that is empty or not base64
        reason = str(exc) if isinstance(exc, SettingsError) else f"unusable: {type(exc).__name__}"
        log.error("clerk webhook: no signing secret (%s); set CLERK_WEBHOOK_SECRET", reason)
        return 503, "webhook signing secret is not configured"
    try:
        body = await _read_body(request)
    except _TooLarge:
        return 413, "body too large"
    try:
        # svix >= 2 returns None; a malformed signature header raises ValueError.
        verifier.verify(body, headers)
    except (WebhookVerificationError, ValueError):
        return 400, "invalid signature"
    assert delivery_id is not None  # verify() requires it
    seen["verified"] = "yes"
    if len(delivery_id) > MAX_DELIVERY_ID:
        return 400, "svix-id too long"
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 400, "body is not valid JSON"
    if isinstance(payload, dict) and isinstance(payload.get("type"), str):
        seen["type"] = payload["type"]  # signed by Clerk: trusted, and still capped as a label
    store: Store = request.app.state.store
    change_source.set("webhook")  # this request's context only: the feed's `source`
    try:
        async with asyncio.timeout(PROCESSING_TIMEOUT_S):
            outcome = await clerk_events.handle_delivery(store, delivery_id, payload)
    except InvalidInput as exc:
        return 400, exc.message
    except Conflict as exc:
        return 409, exc.message
    except (PyMongoError, TimeoutError) as exc:
        log.error(
            "clerk webhook: storing delivery %r failed (%s); Svix will retry",
            delivery_id[:64],
            type(exc).__name__,
        )
        return 503, "storage unavailable; retry later"
    return 200, outcome.value


ROUTES = [
    Route("/webhooks/clerk", clerk_webhook, methods=["POST"]),
    Route("/clerk-users-webhook", clerk_webhook, methods=["POST"]),  # the Convex path
]
