"""Shared shape of stored records: pydantic models whose aliases are the stored field names."""

from __future__ import annotations

from typing import Annotated, Any, Self

from bson import ObjectId
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from datadiver_graph.domain.clock import MAX_TIMESTAMP
from datadiver_graph.domain.errors import InvalidInput
from datadiver_graph.domain.json_values import check_json_object


def _json_object_validator(what: str) -> AfterValidator:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        try:
            return check_json_object(value, what)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None

    return AfterValidator(check)


Metadata = Annotated[dict[str, Any], _json_object_validator("metadata")]
Preferences = Annotated[dict[str, Any], _json_object_validator("preferences")]
Timestamp = Annotated[int, Field(ge=0, le=MAX_TIMESTAMP)]


def new_id() -> str:
    # String ids keep Convex-exported `_id`s and ours in one type, so a round trip is exact.
    return str(ObjectId())


class Record(BaseModel):
    """A stored document. `version` increases by one on every write (subscriptions rely on it)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    id: str = Field(alias="_id", min_length=1, max_length=128)
    version: int = Field(default=1, ge=1)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Self:
        return cls.model_validate(doc)

    def to_doc(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)

    @classmethod
    def from_untrusted(cls, doc: Any) -> Self:
        """Validate a document from outside (an import file); errors name the field."""
        if not isinstance(doc, dict):
            raise InvalidInput("a document must be a JSON object")
        known = {field.alias or name for name, field in cls.model_fields.items()}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
        try:
            return cls.model_validate(doc, strict=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "document"
            raise InvalidInput(f"{where}: {first['msg']}") from None
