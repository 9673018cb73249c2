"""Clerk payload -> domain input, without a server: the field rules in detail."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import SecretStr

from datadiver_graph.api.webhooks import DEV_WEBHOOK_SECRET, webhook_secret
from datadiver_graph.config import Settings, SettingsError
from datadiver_graph.domain import clerk_events
from datadiver_graph.domain.errors import InvalidInput
from tests.webhook_support import SECRET, T0, USER_CREATED, payment_data

USER = USER_CREATED["data"]


def profile(**fields: Any) -> Any:
    data = copy.deepcopy(USER)
    data.update(fields)
    return clerk_events.profile_from_user(data)


@pytest.mark.parametrize(
    ("first", "last", "name"),
    [
        ("Ada", "Lovelace", "Ada Lovelace"),
        ("  Ada ", " Lovelace  ", "Ada Lovelace"),
        ("Ada", None, "Ada"),
        (None, "Lovelace", "Lovelace"),
        ("", "Lovelace", "Lovelace"),
        ("Ada", "   ", "Ada"),
        (None, None, None),
        ("", "", None),
        (" ", None, None),
        ("null", None, "null"),  # a real name is kept; only a missing one is never "null"
        ("Mary\n Ann", "O\x00Neil\x7f", "Mary Ann O Neil"),
    ],
)
def test_name_from_first_and_last(first: Any, last: Any, name: str | None) -> None:
    assert profile(first_name=first, last_name=last).name == name


def test_absent_name_fields_and_long_names() -> None:
    data = {"id": "user_1"}
    assert clerk_events.profile_from_user(data).name is None
    long = profile(first_name="A" * 150, last_name="B" * 150).name
    assert long is not None and len(long) == 200


def test_email_is_the_primary_address_not_the_first() -> None:
    assert USER["email_addresses"][0]["email_address"] == "old@example.org"
    assert profile().email == "example@example.org"


@pytest.mark.parametrize(
    "fields",
    [
        {"primary_email_address_id": None},
        {"email_addresses": []},
        {"email_addresses": None},
        {"primary_email_address_id": "idn_not_listed"},
        {"email_addresses": [{"id": USER["primary_email_address_id"], "email_address": None}]},
    ],
)
def test_email_is_none_without_a_primary_address(fields: dict[str, Any]) -> None:
    assert profile(**fields).email is None


def test_profile_keeps_clerk_times_and_image() -> None:
    got = profile()
    assert (got.external_id, got.image_url) == (USER["id"], "https://img.clerk.com/xxxxxx")
    assert (got.created_at, got.updated_at) == (T0, T0 + 321)
    assert profile(image_url=None, updated_at=None, created_at="x").image_url is None
    assert profile(updated_at=True).updated_at is None


def test_payment_id_prefers_payment_id_then_id() -> None:
    data = payment_data("pay_9")
    assert clerk_events.attempt_from_payment(data).payment_id == "pay_9"
    del data["payment_id"]
    assert clerk_events.attempt_from_payment(data).payment_id == "pa_pay_9"


def test_amount_and_currency_from_the_grand_total() -> None:
    data = payment_data(amount=4_200)
    data["totals"]["grand_total"]["currency"] = "EUR"
    attempt = clerk_events.attempt_from_payment(data)
    assert (attempt.amount, attempt.currency) == (4_200, "EUR")
    data["totals"] = {"subtotal": data["totals"]["subtotal"]}  # no grand_total
    attempt = clerk_events.attempt_from_payment(data)
    assert (attempt.amount, attempt.currency) == (None, None)


def test_an_unmodellable_attempt_is_invalid_input() -> None:
    data = payment_data()
    data["status"] = "x" * 100
    with pytest.raises(InvalidInput, match="status"):
        clerk_events.attempt_from_payment(data)


def test_webhook_secret_in_each_environment() -> None:
    # Explicit None: a CLERK_WEBHOOK_SECRET in the developer's environment must not leak in.
    dev = Settings(DATADIVER_ENV="development", CLERK_WEBHOOK_SECRET=None)
    assert webhook_secret(dev) == DEV_WEBHOOK_SECRET
    configured = dev.model_copy(update={"clerk_webhook_secret": SecretStr(SECRET)})
    assert webhook_secret(configured) == SECRET
    production = Settings(DATADIVER_ENV="production", CLERK_WEBHOOK_SECRET=None)
    with pytest.raises(SettingsError, match="CLERK_WEBHOOK_SECRET"):
        webhook_secret(production)
    blank = production.model_copy(update={"clerk_webhook_secret": SecretStr("  ")})
    with pytest.raises(SettingsError):
        webhook_secret(blank)
    set_in_production = production.model_copy(
        update={"clerk_webhook_secret": SecretStr(f" {SECRET}\n")}
    )
    assert webhook_secret(set_in_production) == SECRET
