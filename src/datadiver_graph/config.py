"""Every environment variable the service reads, in one place.

Names follow ARCHITECTURE.md; the Convex seed's names are accepted as aliases so an
existing `.env` keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from datadiver_graph.api.persisted_documents import load_manifest

Environment = Literal["development", "production"]

BROADCAST_SCHEMES = ("memory", "redis", "rediss", "postgres", "postgresql")
_BAD_DB_CHARS = frozenset('/\\. "$\x00')


def _split_csv(value: object) -> object:
    # Lists arrive as "a,b,c" in env vars; JSON lists would surprise operators.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        # `KEY=` in a .env template or a compose file means "not set", not "set to ''".
        env_ignore_empty=True,
    )

    datadiver_env: Environment = Field(
        default="development", validation_alias=AliasChoices("DATADIVER_ENV")
    )
    mongodb_uri: str | None = Field(default=None, validation_alias=AliasChoices("MONGODB_URI"))
    mongodb_db: str = Field(
        default="datadiver", min_length=1, validation_alias=AliasChoices("MONGODB_DB")
    )
    # How long an operation waits for MongoDB before failing with SERVICE_UNAVAILABLE.
    mongodb_timeout_ms: int = Field(
        default=2_000, ge=100, le=60_000, validation_alias=AliasChoices("MONGODB_TIMEOUT_MS")
    )
    data_dir: Path = Field(default=Path(".data"), validation_alias=AliasChoices("DATA_DIR"))

    clerk_issuer: CsvList = Field(
        default_factory=list,
        validation_alias=AliasChoices("CLERK_ISSUER", "NEXT_PUBLIC_CLERK_FRONTEND_API_URL"),
    )
    clerk_jwks_url: str | None = Field(
        default=None, validation_alias=AliasChoices("CLERK_JWKS_URL")
    )
    clerk_jwt_audience: CsvList = Field(
        default_factory=list, validation_alias=AliasChoices("CLERK_JWT_AUDIENCE")
    )
    clerk_authorized_parties: CsvList = Field(
        default_factory=list, validation_alias=AliasChoices("CLERK_AUTHORIZED_PARTIES")
    )
    clerk_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CLERK_WEBHOOK_SECRET")
    )
    # Clerk's Backend API, for `sync-clerk` only (the server never calls it).
    clerk_secret_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CLERK_SECRET_KEY")
    )
    clerk_api_url: str = Field(
        default="https://api.clerk.com/v1", validation_alias=AliasChoices("CLERK_API_URL")
    )
    broadcast_url: str = Field(default="memory://", validation_alias=AliasChoices("BROADCAST_URL"))
    service_api_keys: CsvList = Field(
        default_factory=list, validation_alias=AliasChoices("SERVICE_API_KEYS")
    )
    max_query_size: int = Field(
        default=100,
        ge=1,
        le=10_000,
        validation_alias=AliasChoices("MAX_QUERY_SIZE", "CONVEX_MAX_QUERY_SIZE"),
    )
    # Seconds the JWKS key set (and other remote lookups) may be served from cache.
    cache_ttl: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        validation_alias=AliasChoices("CACHE_TTL", "CONVEX_CACHE_TTL"),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias=AliasChoices("LOG_LEVEL")
    )
    # `json` (one object per line) or `text`; unset: json in production, text in development.
    log_format: Literal["json", "text"] | None = Field(
        default=None, validation_alias=AliasChoices("LOG_FORMAT")
    )

    # API limits (hardening). Each refusal carries its own GraphQL error code.
    max_query_depth: int = Field(
        default=12, ge=2, le=100, validation_alias=AliasChoices("MAX_QUERY_DEPTH")
    )
    max_aliases: int = Field(
        default=30, ge=0, le=1000, validation_alias=AliasChoices("MAX_ALIASES")
    )
    max_tokens: int = Field(
        default=2_000, ge=50, le=100_000, validation_alias=AliasChoices("MAX_TOKENS")
    )
    max_directives_per_field: int = Field(
        default=4, ge=0, le=50, validation_alias=AliasChoices("MAX_DIRECTIVES_PER_FIELD")
    )
    max_batch_operations: int = Field(
        default=10, ge=1, le=100, validation_alias=AliasChoices("MAX_BATCH_OPERATIONS")
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1_024,
        le=64 * 1_048_576,
        validation_alias=AliasChoices("MAX_BODY_BYTES"),
    )
    max_variables_bytes: int = Field(
        default=65_536,
        ge=256,
        le=16 * 1_048_576,
        validation_alias=AliasChoices("MAX_VARIABLES_BYTES"),
    )
    # Requests per identity (user, service key, or client address) per minute; 0 disables.
    rate_limit_per_minute: int = Field(
        default=600, ge=0, le=1_000_000, validation_alias=AliasChoices("RATE_LIMIT_PER_MINUTE")
    )
    request_timeout: float = Field(
        default=10.0, gt=0, le=300, validation_alias=AliasChoices("REQUEST_TIMEOUT")
    )
    cors_allowed_origins: CsvList = Field(
        default_factory=list, validation_alias=AliasChoices("CORS_ALLOWED_ORIGINS")
    )

    # Persisted documents (api/persisted_documents.py). APQ documents kept per process
    # (least recently used dropped); 0 turns APQ off.
    apq_cache_size: int = Field(
        default=1_000, ge=0, le=100_000, validation_alias=AliasChoices("APQ_CACHE_SIZE")
    )
    # The manifest @graphql-codegen/client-preset writes (persisted-documents.json).
    trusted_documents_path: Path | None = Field(
        default=None, validation_alias=AliasChoices("TRUSTED_DOCUMENTS_PATH")
    )
    # Run only the manifest's documents: no free query text, no APQ registration.
    trusted_documents_only: bool = Field(
        default=False, validation_alias=AliasChoices("TRUSTED_DOCUMENTS_ONLY")
    )

    # The fast paths (fastpaths/): on unless turned off or an installed library lies outside
    # the versions they were tested on; off, requests take stock Strawberry and uvicorn.
    fast_paths: bool = Field(default=True, validation_alias=AliasChoices("FAST_PATHS"))

    # Bearer token Prometheus sends to scrape /metrics. Required whenever set; in
    # production /metrics answers 404 without it (it names routes, errors and load).
    metrics_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("METRICS_TOKEN")
    )

    # The operator console (/console) and `datadiver-graph logs` (console/). Unset: on in
    # development (open to localhost when no credential is set), off in production.
    console_enabled: bool | None = Field(
        default=None, validation_alias=AliasChoices("CONSOLE_ENABLED")
    )
    console_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CONSOLE_TOKEN")
    )
    # Clerk user ids whose session token (or `__session` cookie) opens the console.
    console_admin_user_ids: CsvList = Field(
        default_factory=list, validation_alias=AliasChoices("CONSOLE_ADMIN_USER_IDS")
    )

    @field_validator(
        "clerk_issuer",
        "clerk_jwt_audience",
        "clerk_authorized_parties",
        "service_api_keys",
        "cors_allowed_origins",
        "console_admin_user_ids",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("clerk_issuer")
    @classmethod
    def _issuers_are_urls(cls, value: list[str]) -> list[str]:
        for issuer in value:
            parsed = urlparse(issuer)
            if parsed.scheme not in ("https", "http") or not parsed.netloc:
                raise ValueError(f"{issuer!r} is not an http(s) URL")
        return [issuer.rstrip("/") for issuer in value]

    @field_validator("datadiver_env", "log_level", "log_format", mode="before")
    @classmethod
    def _normalise_case(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        value = value.strip()
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("mongodb_db")
    @classmethod
    def _db_name(cls, value: str) -> str:
        # MongoDB's own rules; caught here so a typo fails at start-up, naming the variable.
        bad = sorted({ch for ch in value if ch in _BAD_DB_CHARS})
        if bad:
            raise ValueError(f"must not contain {' '.join(repr(ch) for ch in bad)}")
        if len(value.encode()) > 63:
            raise ValueError("must be at most 63 bytes")
        return value

    @field_validator("clerk_jwks_url")
    @classmethod
    def _jwks_is_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("https", "http") or not parsed.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _default_jwks_url(self) -> Settings:
        # Clerk serves each instance's keys under its issuer; with several issuers there is
        # no single default, and auth derives one per issuer.
        if self.clerk_jwks_url is None and len(self.clerk_issuer) == 1:
            self.clerk_jwks_url = f"{self.clerk_issuer[0]}/.well-known/jwks.json"
        return self

    @field_validator("cors_allowed_origins")
    @classmethod
    def _origins_are_exact(cls, value: list[str]) -> list[str]:
        for origin in value:
            parsed = urlparse(origin)
            if origin == "*" or parsed.scheme not in ("https", "http") or not parsed.netloc:
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return [origin.rstrip("/") for origin in value]

    @field_validator("trusted_documents_path")
    @classmethod
    def _manifest_loads(cls, value: Path | None) -> Path | None:
        # Read once here so a bad path or file fails at start-up, naming the variable.
        if value is not None:
            load_manifest(value)
        return value

    @field_validator("trusted_documents_only")
    @classmethod
    def _only_with_a_manifest(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("trusted_documents_path") is None:
            raise ValueError("needs TRUSTED_DOCUMENTS_PATH (the manifest of trusted documents)")
        return value

    @field_validator("mongodb_uri")
    @classmethod
    def _mongo_scheme(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("must start with mongodb:// or mongodb+srv://")
        return value

    @field_validator("broadcast_url")
    @classmethod
    def _broadcast_scheme(cls, value: str) -> str:
        scheme = urlparse(value).scheme
        if scheme not in BROADCAST_SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(BROADCAST_SCHEMES)}")
        return value

    @field_validator("service_api_keys")
    @classmethod
    def _keys_long_enough(cls, value: list[str]) -> list[str]:
        # A short key is guessable; refuse it rather than run with it.
        for key in value:
            if len(key) < 16:
                raise ValueError("each key must be at least 16 characters")
        return value

    @field_validator("console_token", "metrics_token")
    @classmethod
    def _console_token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < 24:
            raise ValueError("must be at least 24 characters")
        return value

    @model_validator(mode="after")
    def _console_needs_a_credential(self) -> Settings:
        # Production never opens the console to whoever reaches it.
        if (
            self.is_production
            and self.console_enabled
            and self.console_token is None
            and not self.console_admin_user_ids
        ):
            raise ValueError(
                "CONSOLE_ENABLED in production needs CONSOLE_TOKEN or CONSOLE_ADMIN_USER_IDS"
            )
        return self

    @property
    def console_on(self) -> bool:
        if self.console_enabled is not None:
            return self.console_enabled
        return not self.is_production

    @property
    def is_production(self) -> bool:
        return self.datadiver_env == "production"

    @property
    def effective_log_format(self) -> Literal["json", "text"]:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.is_production else "text"

    @property
    def embedded_data_path(self) -> Path:
        return self.data_dir / "mongo"


class SettingsError(Exception):
    """Configuration is invalid; the message names each offending variable."""


def _env_name(field_name: str) -> str:
    """The variable the operator set: the alias present in the environment, else the main name."""
    field = Settings.model_fields[field_name]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices) and alias.choices:
        names = [choice for choice in alias.choices if isinstance(choice, str)]
        present = {key.upper() for key, value in os.environ.items() if value != ""}
        for name in names:
            if name.upper() in present:
                return name
        if names:
            return names[0]
    return field_name.upper()


def _field_for(loc: str) -> str | None:
    """pydantic reports an error under the field's name or its first alias; map either back."""
    if loc in Settings.model_fields:
        return loc
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices) and any(
            isinstance(choice, str) and choice.upper() == loc.upper() for choice in alias.choices
        ):
            return field_name
    return None


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, turning pydantic's report into one per variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = error["loc"][0] if error["loc"] else "?"
            field_name = _field_for(str(loc))
            name = _env_name(field_name) if field_name else str(loc)
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
