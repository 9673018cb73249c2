"""`datadiver-graph dev-webhook EVENT --user USER_ID ...`: send a signed Clerk event to a server.

Builds the payload Clerk would send for EVENT, signs it with the svix library exactly as
Clerk's Svix does (with CLERK_WEBHOOK_SECRET, or in development without it the server's own
`webhooks.DEV_WEBHOOK_SECRET`), posts it to `--url`/webhooks/clerk and prints the answer.
Development only: it refuses to run when DATADIVER_ENV=production.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from svix.webhooks import Webhook

from datadiver_graph.api.webhooks import webhook_secret
from datadiver_graph.config import Settings
from datadiver_graph.domain.clock import now_ms

EVENTS = (
    "user.created",
    "user.updated",
    "user.deleted",
    "paymentAttempt.created",
    "paymentAttempt.updated",
)
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_AMOUNT = 1999
INSTANCE_ID = "ins_dev"


def add_dev_webhook_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "dev-webhook", help="send a signed Clerk webhook event to a running server (development)"
    )
    parser.add_argument("event", metavar="EVENT", choices=EVENTS, help=", ".join(EVENTS))
    parser.add_argument("--user", required=True, metavar="USER_ID", help="Clerk user id")
    parser.add_argument("--first-name")
    parser.add_argument("--last-name")
    parser.add_argument("--email", help="primary email address")
    parser.add_argument(
        "--status",
        choices=("pending", "paid", "failed"),
        help="payment status (default: pending when created, paid when updated)",
    )
    parser.add_argument(
        "--amount", type=int, default=DEFAULT_AMOUNT, help="minor units (default 1999)"
    )
    parser.add_argument(
        "--payment-id", help="Clerk payment id (default: one per user, so updates match)"
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"server base URL ({DEFAULT_URL})")
    return parser


def _envelope(event: str, data: dict[str, Any], now: int) -> dict[str, Any]:
    return {
        "data": data,
        "event_attributes": {
            "http_request": {"client_ip": "127.0.0.1", "user_agent": "datadiver-graph dev-webhook"}
        },
        "instance_id": INSTANCE_ID,
        "object": "event",
        "timestamp": now,
        "type": event,
    }


def _user(args: argparse.Namespace, now: int) -> dict[str, Any]:
    email_id = f"idn_dev_{args.user}"
    emails = []
    if args.email:
        emails.append(
            {
                "email_address": args.email,
                "id": email_id,
                "linked_to": [],
                "object": "email_address",
                "reserved": False,
                "verification": {"attempts": None, "expire_at": None, "status": "verified"},
            }
        )
    return {
        "backup_code_enabled": False,
        "banned": False,
        "create_organization_enabled": True,
        "created_at": now,
        "delete_self_enabled": True,
        "email_addresses": emails,
        "external_accounts": [],
        "external_id": None,
        "first_name": args.first_name,
        "has_image": False,
        "id": args.user,
        "image_url": "https://img.clerk.com/dev-placeholder",
        "last_active_at": now,
        "last_name": args.last_name,
        "last_sign_in_at": None,
        "locked": False,
        "object": "user",
        "password_enabled": True,
        "phone_numbers": [],
        "primary_email_address_id": email_id if args.email else None,
        "primary_phone_number_id": None,
        "primary_web3_wallet_id": None,
        "private_metadata": {},
        "public_metadata": {},
        "saml_accounts": [],
        "totp_enabled": False,
        "two_factor_enabled": False,
        "unsafe_metadata": {},
        "updated_at": now,
        "username": None,
        "web3_wallets": [],
    }


def _money(amount: int) -> dict[str, Any]:
    return {
        "amount": amount,
        "amount_formatted": f"{amount / 100:.2f}",
        "currency": "USD",
        "currency_symbol": "$",
    }


def _payment_attempt(args: argparse.Namespace, event: str, now: int) -> dict[str, Any]:
    status = args.status or ("pending" if event == "paymentAttempt.created" else "paid")
    payment_id = args.payment_id or f"pay_dev_{args.user}"
    return {
        "billing_date": now,
        "charge_type": "checkout",
        "created_at": now,
        "failed_at": now if status == "failed" else None,
        "failed_reason": (
            {"code": "card_declined", "decline_code": "insufficient_funds"}
            if status == "failed"
            else None
        ),
        "gateway_external_id": f"pi_dev_{uuid.uuid4().hex[:16]}",
        "id": f"pa_dev_{uuid.uuid4().hex[:16]}",
        "instance_id": INSTANCE_ID,
        "object": "commerce_payment_attempt",
        "paid_at": now if status == "paid" else None,
        "payee": {
            "gateway_external_id": "acct_dev",
            "gateway_status": "active",
            "gateway_type": "stripe",
            "id": "cpayee_dev",
        },
        "payer": {
            "created_at": now,
            "email": args.email,
            "first_name": args.first_name,
            "id": f"cpayer_dev_{args.user}",
            "image_url": "https://img.clerk.com/dev-placeholder",
            "instance_id": INSTANCE_ID,
            "last_name": args.last_name,
            "object": "commerce_payer",
            "updated_at": now,
            "user_id": args.user,
        },
        "payment_id": payment_id,
        "payment_source": {
            "card_type": "visa",
            "gateway": "stripe",
            "gateway_external_account_id": None,
            "gateway_external_id": "pm_dev",
            "id": "cps_dev",
            "last4": "4242",
            "object": "commerce_payment_source",
            "payment_method": "card",
            "status": "active",
        },
        "statement_id": f"stmt_dev_{args.user}",
        "status": status,
        "subscription_items": [
            {
                "amount": _money(args.amount),
                "id": f"csubi_dev_{args.user}",
                "object": "commerce_subscription_item",
                "plan": {"id": "cplan_dev", "name": "Pro", "slug": "pro", "is_default": False},
                "plan_period": "month",
                "status": "active",
            }
        ],
        "totals": {
            "grand_total": _money(args.amount),
            "subtotal": _money(args.amount),
            "tax_total": _money(0),
        },
        "updated_at": now,
    }


def build_payload(args: argparse.Namespace, now: int | None = None) -> dict[str, Any]:
    """The event Clerk would send for `args.event`, with Clerk's field names and shapes."""
    now = now if now is not None else now_ms()
    if args.event == "user.deleted":
        data: dict[str, Any] = {"deleted": True, "id": args.user, "object": "user"}
    elif args.event.startswith("user."):
        data = _user(args, now)
    else:
        data = _payment_attempt(args, args.event, now)
    return _envelope(args.event, data, now)


def signed_headers(secret: str, msg_id: str, body: str) -> dict[str, str]:
    timestamp = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": str(int(timestamp.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, timestamp, body),
    }


async def run_dev_webhook(args: argparse.Namespace, settings: Settings) -> None:
    # Imported here: cli imports this module to register the command.
    from datadiver_graph.cli import CliError

    if settings.is_production:
        raise CliError("dev-webhook refuses to run when DATADIVER_ENV=production")
    body = orjson.dumps(build_payload(args)).decode()
    headers = signed_headers(webhook_secret(settings), f"msg_dev_{uuid.uuid4().hex}", body)
    url = args.url.rstrip("/") + "/webhooks/clerk"
    try:
        async with httpx.AsyncClient(timeout=20) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot post to {url}: {exc}") from None
    print(f"{response.http_version} {response.status_code} {response.reason_phrase}")
    if response.text:
        print(response.text)
    if response.is_error:
        raise CliError(f"the server refused the event ({response.status_code})")
