"""`datadiver-graph dev-webhook`: realistic signed events against a running server."""

from __future__ import annotations

import argparse

import pytest
from pydantic import SecretStr

from datadiver_graph.app import create_app
from datadiver_graph.cli import CliError
from datadiver_graph.config import Settings
from datadiver_graph.dev.webhook import add_dev_webhook_parser, build_payload, run_dev_webhook
from datadiver_graph.domain import clerk_events
from datadiver_graph.storage import mongo as db
from tests.servers import serve_app
from tests.webhook_support import SECRET


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_dev_webhook_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["dev-webhook", *argv])


async def test_dev_webhook_drives_a_user_and_a_payment_through_the_server(
    app_url: str,
    settings: Settings,
    database: db.Database,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The server and the command share the development secret: CLERK_WEBHOOK_SECRET is unset.
    assert settings.clerk_webhook_secret is None
    common = ("--user", "user_dev", "--url", app_url)
    await run_dev_webhook(
        parse("user.created", *common, "--first-name", "Dev", "--email", "dev@example.com"),
        settings,
    )
    assert capsys.readouterr().out.splitlines() == [
        "HTTP/1.1 200 OK",
        '{"status":"applied"}',
    ]
    await run_dev_webhook(parse("user.updated", *common, "--last-name", "User"), settings)
    await run_dev_webhook(parse("paymentAttempt.created", *common, "--amount", "500"), settings)
    await run_dev_webhook(parse("paymentAttempt.updated", *common, "--amount", "500"), settings)

    user = await database.users.find_one({"externalId": "user_dev"})
    assert user is not None
    assert (user["name"], user["email"]) == ("User", None)  # user.updated carries no first name
    attempt = await database.payment_attempts.find_one({"userId": "user_dev"})
    assert attempt is not None
    assert (attempt["status"], attempt["amount"], attempt["currency"]) == ("paid", 500, "USD")

    await run_dev_webhook(parse("user.deleted", *common), settings)
    assert await database.users.count_documents({}) == 0
    assert await database.payment_attempts.count_documents({}) == 1


def test_payloads_have_clerks_shape_and_map_cleanly() -> None:
    args = parse("paymentAttempt.updated", "--user", "user_x", "--status", "failed")
    payload = build_payload(args, now=1_000)
    assert payload["type"] == "paymentAttempt.updated"
    assert payload["object"] == "event"
    attempt = clerk_events.attempt_from_payment(payload["data"])
    assert (attempt.user_id, attempt.status, attempt.failed_at) == ("user_x", "failed", 1_000)
    assert attempt.failed_reason == {"code": "card_declined", "decline_code": "insufficient_funds"}

    user = build_payload(parse("user.created", "--user", "user_x", "--email", "x@example.com"))
    assert clerk_events.profile_from_user(user["data"]).email == "x@example.com"
    deleted = build_payload(parse("user.deleted", "--user", "user_x"))
    assert deleted["data"] == {"deleted": True, "id": "user_x", "object": "user"}


async def test_dev_webhook_reports_a_refusal(settings: Settings, database: db.Database) -> None:
    # A server with a real secret does not accept the development one.
    secured = settings.model_copy(update={"clerk_webhook_secret": SecretStr(SECRET)})
    async with serve_app(create_app(secured)) as url:
        with pytest.raises(CliError, match="400"):
            await run_dev_webhook(parse("user.created", "--user", "u1", "--url", url), settings)
    assert await database.users.count_documents({}) == 0


async def test_dev_webhook_refuses_production(settings: Settings) -> None:
    production = settings.model_copy(update={"datadiver_env": "production"})
    with pytest.raises(CliError, match="production"):
        await run_dev_webhook(parse("user.created", "--user", "u1"), production)


async def test_dev_webhook_reports_an_unreachable_server(settings: Settings) -> None:
    with pytest.raises(CliError, match="cannot post"):
        await run_dev_webhook(
            parse("user.created", "--user", "u1", "--url", "http://127.0.0.1:9"), settings
        )
