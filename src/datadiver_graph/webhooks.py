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
import logging

import orjson
from pymongo.errors import PyMongoError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from svix.webhooks import Webhook, WebhookVerificationError

from datadiver_graph.config import Settings, SettingsError
from datadiver_graph.domain import clerk_events
from datadiver_graph.domain.errors import Conflict, InvalidInput
from datadiver_graph.store import Store

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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _rejected(delivery_id: str | None, reason: str, status: int = 400) -> JSONResponse:
    # Logged once, by clerk_webhook's summary line (never the body: it has personal data).
    return _error(status, reason)


# Outcome label of a refused delivery, by status (200s carry theirs in the body).
_OUTCOMES = {400: "rejected", 409: "conflict", 413: "too_large", 503: "unavailable"}


async def clerk_webhook(request: Request) -> JSONResponse:
    """Receive one delivery, then log one line and count it, whatever became of it."""
    seen: dict[str, str] = {}
    response = await _receive(request, seen)
    answer = orjson.loads(response.body)
    status = response.status_code
    if status == 200:
        outcome = str(answer.get("status"))
    elif answer.get("error") == "invalid signature":
        outcome = "invalid_signature"
    else:
        outcome = _OUTCOMES.get(status, f"http_{status}")
    event_type = seen.get("type")
    request.app.state.metrics.observe_webhook(event_type, outcome)
    delivery_id = request.headers.get("svix-id") or request.headers.get("webhook-id") or ""
    log.log(
        logging.INFO if status == 200 else logging.ERROR if status >= 500 else logging.WARNING,
        "clerk webhook %s: %s%s",
        event_type or "(unverified)",
        outcome,
        f" ({answer['error']})" if answer.get("error") else "",
        extra={
            "event": "webhook",
            "event_type": event_type,
            # Attacker-controlled until verified: capped.
            "svix_id": delivery_id[:MAX_DELIVERY_ID],
            "outcome": outcome,
            "status": status,
            "reason": answer.get("error"),
        },
    )
    return response


async def _receive(request: Request, seen: dict[str, str]) -> JSONResponse:
    settings: Settings = request.app.state.settings
    headers = {name: request.headers[name] for name in SIGNATURE_HEADERS if name in request.headers}
    delivery_id = headers.get("svix-id") or headers.get("webhook-id")
    try:
        verifier = Webhook(webhook_secret(settings))
    except Exception as exc:  # SettingsError, or a secret that is empty or not base64
        reason = str(exc) if isinstance(exc, SettingsError) else f"unusable: {type(exc).__name__}"
        log.error("clerk webhook: no signing secret (%s); set CLERK_WEBHOOK_SECRET", reason)
        return _error(503, "webhook signing secret is not configured")
    try:
        body = await _read_body(request)
    except _TooLarge:
        return _rejected(delivery_id, "body too large", 413)
    try:
        # svix >= 2 returns None; a malformed signature header raises ValueError.
        verifier.verify(body, headers)
    except (WebhookVerificationError, ValueError):
        return _rejected(delivery_id, "invalid signature")
    assert delivery_id is not None  # verify() requires it
    if len(delivery_id) > MAX_DELIVERY_ID:
        return _rejected(delivery_id, "svix-id too long")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _rejected(delivery_id, "body is not valid JSON")
    if isinstance(payload, dict) and isinstance(payload.get("type"), str):
        seen["type"] = payload["type"]  # signed by Clerk: trusted, and still capped as a label
    store: Store = request.app.state.store
    try:
        async with asyncio.timeout(PROCESSING_TIMEOUT_S):
            outcome = await clerk_events.handle_delivery(store, delivery_id, payload)
    except InvalidInput as exc:
        return _rejected(delivery_id, exc.message)
    except Conflict as exc:
        return _rejected(delivery_id, exc.message, 409)
    except (PyMongoError, TimeoutError) as exc:
        log.error(
            "clerk webhook: storing delivery %r failed (%s); Svix will retry",
            delivery_id[:64],
            type(exc).__name__,
        )
        return _error(503, "storage unavailable; retry later")
    return JSONResponse({"status": outcome.value})


ROUTES = [
    Route("/webhooks/clerk", clerk_webhook, methods=["POST"]),
    Route("/clerk-users-webhook", clerk_webhook, methods=["POST"]),  # the Convex path
]
