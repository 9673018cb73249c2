"""Settings: every variable of ARCHITECTURE.md, the Convex aliases, and one-line rejects."""

from __future__ import annotations

from pathlib import Path

import pytest

from datadiver_graph.config import Settings, SettingsError, load_settings
from tests.cli import assert_one_line_error, clean_env, run

ALL_VARIABLES = (
    "MONGODB_URI",
    "MONGODB_DB",
    "DATA_DIR",
    "CLERK_ISSUER",
    "NEXT_PUBLIC_CLERK_FRONTEND_API_URL",
    "CLERK_JWKS_URL",
    "CLERK_JWT_AUDIENCE",
    "CLERK_AUTHORIZED_PARTIES",
    "CLERK_WEBHOOK_SECRET",
    "BROADCAST_URL",
    "SERVICE_API_KEYS",
    "MAX_QUERY_SIZE",
    "CONVEX_MAX_QUERY_SIZE",
    "CACHE_TTL",
    "CONVEX_CACHE_TTL",
    "DATADIVER_ENV",
    "LOG_LEVEL",
)

KEY_1 = "k" * 16 + "-one"
KEY_2 = "k" * 16 + "-two"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean environment, in a directory without a stray .env."""
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_defaults(env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.mongodb_uri is None  # embedded SecantusDB
    assert settings.mongodb_db == "datadiver"
    assert settings.data_dir == Path(".data")
    assert settings.embedded_data_path == Path(".data") / "mongo"
    assert settings.clerk_issuer == []
    assert settings.clerk_jwks_url is None
    assert settings.clerk_jwt_audience == []
    assert settings.clerk_authorized_parties == []
    assert settings.clerk_webhook_secret is None
    assert settings.broadcast_url == "memory://"
    assert settings.service_api_keys == []
    assert settings.max_query_size == 100
    assert settings.cache_ttl == 300
    assert settings.datadiver_env == "development"
    assert not settings.is_production


def test_every_variable_is_read(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("MONGODB_URI", "mongodb://db.example.com:27017/?replicaSet=rs0")
    env.setenv("MONGODB_DB", "datadiver_test")
    env.setenv("DATA_DIR", str(tmp_path / "data"))
    env.setenv("CLERK_ISSUER", "https://clerk.example.com/")
    env.setenv("CLERK_JWKS_URL", "https://keys.example.com/jwks.json")
    env.setenv("CLERK_JWT_AUDIENCE", "convex")
    env.setenv("CLERK_AUTHORIZED_PARTIES", "https://app.example.com")
    env.setenv("CLERK_WEBHOOK_SECRET", "whsec_c2VjcmV0")
    env.setenv("BROADCAST_URL", "redis://127.0.0.1:6379/0")
    env.setenv("SERVICE_API_KEYS", KEY_1)
    env.setenv("MAX_QUERY_SIZE", "250")
    env.setenv("CACHE_TTL", "60.5")
    env.setenv("DATADIVER_ENV", "production")
    env.setenv("LOG_LEVEL", "warning")
    settings = load_settings()
    assert settings.mongodb_uri == "mongodb://db.example.com:27017/?replicaSet=rs0"
    assert settings.mongodb_db == "datadiver_test"
    assert settings.data_dir == tmp_path / "data"
    assert settings.embedded_data_path == tmp_path / "data" / "mongo"
    assert settings.clerk_issuer == ["https://clerk.example.com"]  # trailing slash dropped
    assert settings.clerk_jwks_url == "https://keys.example.com/jwks.json"
    assert settings.clerk_jwt_audience == ["convex"]
    assert settings.clerk_authorized_parties == ["https://app.example.com"]
    assert settings.clerk_webhook_secret is not None
    assert settings.clerk_webhook_secret.get_secret_value() == "whsec_c2VjcmV0"
    assert "whsec_c2VjcmV0" not in repr(settings)
    assert settings.broadcast_url == "redis://127.0.0.1:6379/0"
    assert settings.service_api_keys == [KEY_1]
    assert settings.max_query_size == 250
    assert settings.cache_ttl == 60.5
    assert settings.datadiver_env == "production"
    assert settings.is_production
    assert settings.log_level == "WARNING"


def test_jwks_url_defaults_to_the_issuers_well_known_path(env: pytest.MonkeyPatch) -> None:
    env.setenv("CLERK_ISSUER", "https://clerk.example.com/")
    assert load_settings().clerk_jwks_url == "https://clerk.example.com/.well-known/jwks.json"


@pytest.mark.parametrize(
    ("alias", "value", "field", "expected"),
    [
        (
            "NEXT_PUBLIC_CLERK_FRONTEND_API_URL",
            "https://driven-mole-1.clerk.accounts.dev",
            "clerk_issuer",
            ["https://driven-mole-1.clerk.accounts.dev"],
        ),
        ("CONVEX_MAX_QUERY_SIZE", "42", "max_query_size", 42),
        ("CONVEX_CACHE_TTL", "15", "cache_ttl", 15.0),
    ],
)
def test_convex_aliases(
    env: pytest.MonkeyPatch, alias: str, value: str, field: str, expected: object
) -> None:
    env.setenv(alias, value)
    assert getattr(load_settings(), field) == expected


def test_the_main_name_wins_over_its_alias(env: pytest.MonkeyPatch) -> None:
    env.setenv("MAX_QUERY_SIZE", "7")
    env.setenv("CONVEX_MAX_QUERY_SIZE", "9")
    assert load_settings().max_query_size == 7


def test_comma_separated_lists(env: pytest.MonkeyPatch) -> None:
    env.setenv("CLERK_ISSUER", "https://a.example.com, https://b.example.com/")
    env.setenv("CLERK_JWT_AUDIENCE", "convex,api ,")
    env.setenv("CLERK_AUTHORIZED_PARTIES", "https://app.example.com,http://localhost:3000")
    env.setenv("SERVICE_API_KEYS", f" {KEY_1} ,{KEY_2}")
    settings = load_settings()
    assert settings.clerk_issuer == ["https://a.example.com", "https://b.example.com"]
    assert settings.clerk_jwt_audience == ["convex", "api"]
    assert settings.clerk_authorized_parties == ["https://app.example.com", "http://localhost:3000"]
    assert settings.service_api_keys == [KEY_1, KEY_2]


def test_empty_values_mean_unset(env: pytest.MonkeyPatch) -> None:
    env.setenv("MONGODB_URI", "")
    env.setenv("CLERK_WEBHOOK_SECRET", "")
    env.setenv("MAX_QUERY_SIZE", "")
    env.setenv("BROADCAST_URL", "")
    settings = load_settings()
    assert settings.mongodb_uri is None
    assert settings.clerk_webhook_secret is None
    assert settings.max_query_size == 100
    assert settings.broadcast_url == "memory://"


def test_a_dotenv_file_in_the_working_directory_is_read(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("MONGODB_DB=from_dotenv\nCONVEX_CACHE_TTL=12\n")
    settings = load_settings()
    assert settings.mongodb_db == "from_dotenv"
    assert settings.cache_ttl == 12


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_QUERY_SIZE", "abc"),
        ("MAX_QUERY_SIZE", "0"),
        ("MAX_QUERY_SIZE", "100000"),
        ("CONVEX_MAX_QUERY_SIZE", "abc"),
        ("CACHE_TTL", "-1"),
        ("CACHE_TTL", "soon"),
        ("CONVEX_CACHE_TTL", "-1"),
        ("BROADCAST_URL", "ftp://x"),
        ("MONGODB_URI", "http://x"),
        ("MONGODB_DB", "a.b"),
        ("MONGODB_DB", "has space"),
        ("DATADIVER_ENV", "staging"),
        ("CLERK_ISSUER", "not-a-url"),
        ("NEXT_PUBLIC_CLERK_FRONTEND_API_URL", "ftp://clerk.example.com"),
        ("CLERK_JWKS_URL", "jwks.json"),
        ("SERVICE_API_KEYS", "short"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_invalid_values_name_the_variable(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    env.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"{name}:" in message
    assert "\n" not in message


def test_several_invalid_values_are_all_named(env: pytest.MonkeyPatch) -> None:
    env.setenv("MAX_QUERY_SIZE", "abc")
    env.setenv("BROADCAST_URL", "ftp://x")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "MAX_QUERY_SIZE:" in str(caught.value)
    assert "BROADCAST_URL:" in str(caught.value)


def test_a_secret_value_is_not_echoed_in_the_error(env: pytest.MonkeyPatch) -> None:
    env.setenv("SERVICE_API_KEYS", "tooshort1")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "tooshort1" not in str(caught.value)


def test_settings_accept_field_names_in_code() -> None:
    settings = Settings(mongodb_db="x", max_query_size=5, _env_file=None)  # type: ignore[call-arg]
    assert (settings.mongodb_db, settings.max_query_size) == ("x", 5)


def test_the_cli_reports_a_bad_variable_in_one_line(tmp_path: Path) -> None:
    env = clean_env(MAX_QUERY_SIZE="abc", DATA_DIR=str(tmp_path / "data"))
    result = run(["export", "--table", "users"], env, tmp_path)
    line = assert_one_line_error(result, "MAX_QUERY_SIZE")
    assert result.stdout == b""
    assert "invalid configuration" in line
    assert not (tmp_path / "data").exists()  # failed before starting any database


def test_the_cli_names_the_alias_the_operator_set(tmp_path: Path) -> None:
    env = clean_env(CONVEX_CACHE_TTL="-1", DATA_DIR=str(tmp_path / "data"))
    result = run(["export", "--table", "users"], env, tmp_path)
    assert_one_line_error(result, "CONVEX_CACHE_TTL")
