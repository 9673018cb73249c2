"""Clerk webhook payloads (shapes from Clerk's docs and @clerk/backend types) and Svix signing."""

from __future__ import annotations

import base64
import copy
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from svix.webhooks import Webhook

SECRET = "whsec_" + base64.b64encode(b"datadiver-graph-test-webhook-key").decode()
T0 = 1_754_000_000_000  # epoch ms, Clerk's unit

# Clerk's documented `user.created` example (trimmed of nothing but personal detail), with a
# second, non-primary address listed first: the primary one must be found by id.
USER_CREATED: dict[str, Any] = {
    "data": {
        "birthday": "",
        "created_at": T0,
        "email_addresses": [
            {
                "email_address": "old@example.org",
                "id": "idn_secondary",
                "linked_to": [],
                "object": "email_address",
                "verification": {"status": "verified", "strategy": "ticket"},
            },
            {
                "email_address": "example@example.org",
                "id": "idn_29w83yL7CwVlJXylYLxcslromF1",
                "linked_to": [],
                "object": "email_address",
                "verification": {"status": "verified", "strategy": "ticket"},
            },
        ],
        "external_accounts": [],
        "external_id": "567772",
        "first_name": "Example",
        "gender": "",
        "id": "user_29w83sxmDNGwOuEthce5gg56FcC",
        "image_url": "https://img.clerk.com/xxxxxx",
        "last_name": "Example",
        "last_sign_in_at": T0,
        "object": "user",
        "password_enabled": True,
        "phone_numbers": [],
        "primary_email_address_id": "idn_29w83yL7CwVlJXylYLxcslromF1",
        "primary_phone_number_id": None,
        "primary_web3_wallet_id": None,
        "private_metadata": {},
        "profile_image_url": "https://www.gravatar.com/avatar?d=mp",
        "public_metadata": {},
        "two_factor_enabled": False,
        "unsafe_metadata": {},
        "updated_at": T0 + 321,
        "username": None,
        "web3_wallets": [],
    },
    "event_attributes": {"http_request": {"client_ip": "0.0.0.0", "user_agent": "Mozilla/5.0"}},
    "instance_id": "ins_123",
    "object": "event",
    "timestamp": T0 + 321,
    "type": "user.created",
}
USER_ID = USER_CREATED["data"]["id"]


def envelope(event_type: str, data: Any) -> dict[str, Any]:
    return {"data": data, "object": "event", "timestamp": T0, "type": event_type}


def user_event(
    event_type: str = "user.created",
    user_id: str = USER_ID,
    *,
    updated_at: int = T0 + 321,
    **fields: Any,
) -> dict[str, Any]:
    payload = copy.deepcopy(USER_CREATED)
    payload["type"] = event_type
    payload["data"].update(id=user_id, updated_at=updated_at, **fields)
    return payload


def user_deleted(user_id: str = USER_ID) -> dict[str, Any]:
    return envelope("user.deleted", {"deleted": True, "id": user_id, "object": "user"})


def money(amount: int, currency: str = "USD") -> dict[str, Any]:
    return {
        "amount": amount,
        "amount_formatted": f"{amount / 100:.2f}",
        "currency": currency,
        "currency_symbol": "$",
    }


def payment_data(
    payment_id: str = "pay_1",
    user_id: str | None = USER_ID,
    status: str = "pending",
    *,
    updated_at: int = T0,
    amount: int = 2500,
) -> dict[str, Any]:
    """`BillingPaymentAttemptWebhookEventJSON` with every documented field present."""
    payer: dict[str, Any] = {
        "created_at": T0,
        "email": "example@example.org",
        "first_name": "Example",
        "id": "cpayer_1",
        "image_url": "https://img.clerk.com/xxxxxx",
        "instance_id": "ins_123",
        "last_name": "Example",
        "object": "commerce_payer",
        "updated_at": T0,
    }
    if user_id is not None:
        payer["user_id"] = user_id
    else:
        payer |= {"organization_id": "org_1", "organization_name": "Acme"}
        del payer["first_name"], payer["last_name"]
    return {
        "billing_date": T0,
        "charge_type": "checkout",
        "created_at": T0,
        "failed_at": updated_at if status == "failed" else None,
        "failed_reason": (
            {"code": "card_declined", "decline_code": "generic_decline"}
            if status == "failed"
            else None
        ),
        "gateway_external_id": "pi_1",
        "id": f"pa_{payment_id}",
        "instance_id": "ins_123",
        "object": "commerce_payment_attempt",
        "paid_at": updated_at if status == "paid" else None,
        "payee": {
            "gateway_external_id": "acct_1",
            "gateway_status": "active",
            "gateway_type": "stripe",
            "id": "cpayee_1",
        },
        "payer": payer,
        "payment_id": payment_id,
        "payment_source": {
            "card_type": "visa",
            "gateway": "stripe",
            "gateway_external_id": "pm_1",
            "id": "cps_1",
            "last4": "4242",
            "payment_method": "card",
            "status": "active",
        },
        "statement_id": "stmt_1",
        "status": status,
        "subscription_items": [
            {
                "amount": money(amount),
                "id": "csubi_1",
                "object": "commerce_subscription_item",
                "plan": {"id": "cplan_1", "name": "Pro", "slug": "pro", "is_default": False},
                "plan_period": "month",
                "status": "active",
            }
        ],
        "totals": {"grand_total": money(amount), "subtotal": money(amount), "tax_total": money(0)},
        "updated_at": updated_at,
    }


def payment_event(event_type: str = "paymentAttempt.created", **kwargs: Any) -> dict[str, Any]:
    return envelope(event_type, payment_data(**kwargs))


def sign(
    payload: Any,
    *,
    msg_id: str | None = None,
    secret: str = SECRET,
    at: datetime | None = None,
    prefix: str = "svix",
) -> tuple[bytes, dict[str, str]]:
    """The body and headers Svix would send: signed by the svix library itself."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    return body, {
        "content-type": "application/json",
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(int(at.timestamp())),
        f"{prefix}-signature": Webhook(secret).sign(msg_id, at, body.decode()),
    }
