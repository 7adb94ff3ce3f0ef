"""Field types and settings shared by the request and response models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StrictStr,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

MAX_TOP_K = 20


def encodable(value: Any) -> Any:
    """Refuse a string that cannot be UTF-8 encoded; pass everything else through."""
    # JSON allows lone surrogates ("\ud800"); the tokenizer cannot take them (422, not 500).
    # Run before the string checks, which would refuse them in vaguer words.
    try:
        if isinstance(value, str):
            value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("not valid Unicode text (lone surrogate)") from exc
    return value


Overflow = Literal["error", "truncate", "sliding_window"]
# Text that reaches a tokenizer: a string of Unicode scalar values.
Text = Annotated[StrictStr, BeforeValidator(encodable)]
# The length is the string's own constraint, so an empty text reads "String should have
# at least 1 character", not a generic "Value ... item".
NonEmptyText = Annotated[StrictStr, Field(min_length=1), BeforeValidator(encodable)]


def is_none(value: object) -> bool:
    """For ``exclude_if``: a field left null is left out of the JSON."""
    return value is None


# Request fields take their JSON type only ("3" is no top_k, "yes" no bool): a wrong type
# is a 422 naming the field, as the contract says, not a guess.
STRICT_REQUEST = ConfigDict(extra="forbid", strict=True)


def served_model_field() -> Any:
    """The optional ``model`` field of a request: which served model scores it."""
    return Field(
        None,
        description="Name of a served model (see /v1/models). Omitted: the model named "
        "'default', or the only one served.",
    )


class DeclaredSchema(BaseModel):
    """A response model whose serializer leaves out what was not asked for: its JSON schema
    (the OpenAPI document's) shows the fields as declared. A serializer returning ``Any``
    would otherwise make it an empty schema, one that says nothing of the response."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        declared = {key: value for key, value in core_schema.items() if key != "serialization"}
        return handler(declared)
