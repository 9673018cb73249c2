"""Every environment variable the service reads, in one place.

Names follow ARCHITECTURE.md; the Convex seed's names are accepted as aliases so an
existing `.env` keeps working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["development", "production"]

BROADCAST_SCHEMES = ("memory", "redis", "rediss", "postgres", "postgresql")


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
    )

    datadiver_env: Environment = Field(
        default="development", validation_alias=AliasChoices("DATADIVER_ENV")
    )
    mongodb_uri: str | None = Field(default=None, validation_alias=AliasChoices("MONGODB_URI"))
    mongodb_db: str = Field(
        default="datadiver", min_length=1, validation_alias=AliasChoices("MONGODB_DB")
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

    @field_validator(
        "clerk_issuer",
        "clerk_jwt_audience",
        "clerk_authorized_parties",
        "service_api_keys",
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

    @property
    def is_production(self) -> bool:
        return self.datadiver_env == "production"

    @property
    def embedded_data_path(self) -> Path:
        return self.data_dir / "mongo"


class SettingsError(Exception):
    """Configuration is invalid; the message names each offending variable."""


def _env_name(field_name: str) -> str:
    field = Settings.model_fields[field_name]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices) and alias.choices:
        first = alias.choices[0]
        return first if isinstance(first, str) else field_name.upper()
    return field_name.upper()


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, turning pydantic's report into one per variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = error["loc"][0] if error["loc"] else "?"
            name = _env_name(str(loc)) if str(loc) in Settings.model_fields else str(loc)
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
