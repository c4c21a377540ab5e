"""Request bodies shared by assistants, threads and (later) runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import Field, field_validator

from core.validation import Input


class JsonSchemaFormat(Input):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _is_json_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                Draft202012Validator.check_schema(value)
            except SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value


class TextFormat(Input):
    type: Literal["text"]


class JsonObjectFormat(Input):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(Input):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormatInput = (
    Literal["auto"]
    | Annotated[
        TextFormat | JsonObjectFormat | JsonSchemaResponseFormat,
        Field(discriminator="type"),
    ]
)

Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(ge=0, le=1)]


def response_format_to_wire(value: ResponseFormatInput | None) -> Any:
    if value is None or value == "auto":
        return "auto"
    assert not isinstance(value, str)
    if isinstance(value, JsonSchemaResponseFormat):
        js = value.json_schema
        return {
            "type": "json_schema",
            "json_schema": {
                "name": js.name,
                "description": js.description,
                "schema": js.schema_,
                "strict": bool(js.strict),
            },
        }
    return {"type": value.type}
