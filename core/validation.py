"""Request validation with pydantic, reported the way OpenAI reports it.

Input models are strict (no "5" for 5, no 5 for "5") and forbid unknown
fields, and every error names the offending field in ``param`` using the
request's own path (``tools[0].function.name``).
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from core.errors import InvalidRequestError

T = TypeVar("T", bound=BaseModel)


class Input(BaseModel):
    """Base for request bodies: strict types, unknown fields rejected."""

    model_config = ConfigDict(strict=True, extra="forbid")


def _check_metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > 16:
        raise ValueError("metadata can have at most 16 keys")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError(f"metadata key '{key[:70]}' is longer than 64 characters")
        if len(item) > 512:
            raise ValueError(
                f"metadata value for '{key}' is longer than 512 characters"
            )
    return value


Metadata = Annotated[dict[str, str], AfterValidator(_check_metadata)]
Id = Annotated[str, Field(min_length=1, max_length=128)]
# Integers the database stores, bounded in the schema: a larger token count
# used to overflow its PostgreSQL integer column with a 500, and a JSON
# integer past 64 bits parses as a float (both found by schemathesis, #9).
# JSON Schema calls 10.0 an integer, and some clients write counts that way:
# accepted as 10 (a fractional value stays a float and is refused).


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# The Field before the validator: after it, pydantic documents the bounds as
# `ge`/`le`, which JSON Schema does not know (schemathesis found 0 "valid").
Integral = BeforeValidator(_integral)
Count = Annotated[int, Field(ge=1, le=2**31 - 1), Integral]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1), Integral]


def _describe(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a decimal number",
        str: "a string",
        list: "an array",
        dict: "an object",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def _is_tag(
    loc: tuple[int | str, ...], i: int, current: dict[str, Any], missing: bool
) -> bool:
    """Is ``loc[i]`` a discriminator tag rather than the key of that name?

    ``{"type": "function", "function": {"name": ...}}`` fails at loc
    ``function, function, name``: the first is the tag. Otherwise the element
    is the key when what follows it in loc can be found inside it (or is the
    missing field the error is about).
    """
    elem = loc[i]
    if current.get("type") != elem or i == len(loc) - 1:
        return False
    following = loc[i + 1]
    if following == elem:
        return True
    inner = current.get(str(elem))
    if isinstance(inner, dict):
        last_missing = missing and i + 1 == len(loc) - 1
        return following not in inner and not last_missing
    if isinstance(inner, list):
        return not isinstance(following, int)
    return True


def _param_path(loc: tuple[int | str, ...], data: Any, keep_last: bool) -> str:
    """Map pydantic's loc to the request's own path.

    Union members and discriminator tags appear in loc as labels that are
    not keys of the input; walking the input alongside tells them apart.
    """
    parts: list[str] = []
    current = data
    for i, elem in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(current, dict) and _is_tag(loc, i, current, keep_last):
            continue
        if isinstance(current, dict) and isinstance(elem, str) and elem in current:
            parts.append(f".{elem}" if parts else elem)
            current = current[elem]
        elif isinstance(current, list) and isinstance(elem, int):
            parts.append(f"[{elem}]")
            current = current[elem] if elem < len(current) else None
        elif last and keep_last and isinstance(elem, str):
            parts.append(f".{elem}" if parts else elem)
    return "".join(parts)


def _value_at(loc: tuple[int | str, ...], data: Any) -> Any:
    current = data
    for elem in loc:
        if isinstance(current, dict):
            if elem in current:
                current = current[elem]
        elif (
            isinstance(current, list) and isinstance(elem, int) and elem < len(current)
        ):
            current = current[elem]
    return current


def _message(error: dict[str, Any], param: str, data: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}"
    if kind == "missing":
        return f"Missing required parameter: '{param}'."
    if kind in {
        "string_type",
        "int_type",
        "float_type",
        "bool_type",
        "list_type",
        "dict_type",
        "model_type",
        "model_attributes_type",
    }:
        expected = {
            "string_type": "a string",
            "int_type": "an integer",
            "float_type": "a number",
            "bool_type": "a boolean",
            "list_type": "an array",
            "dict_type": "an object",
            "model_type": "an object",
            "model_attributes_type": "an object",
        }[kind]
        got = _describe(_value_at(tuple(error["loc"]), data))
        return (
            f"Invalid type for '{param}': expected {expected}, but got {got} instead."
        )
    if kind == "string_too_long":
        return (
            f"Invalid '{param}': string too long. Expected a string with maximum "
            f"length {ctx.get('max_length')}."
        )
    if kind == "string_too_short":
        return (
            f"Invalid '{param}': string too short. Expected a string with minimum "
            f"length {ctx.get('min_length')}."
        )
    if kind == "too_long":
        return (
            f"Invalid '{param}': array too long. Expected an array with maximum "
            f"length {ctx.get('max_length')}."
        )
    if kind == "too_short":
        return (
            f"Invalid '{param}': array too short. Expected an array with minimum "
            f"length {ctx.get('min_length')}."
        )
    if kind in {"literal_error", "enum"}:
        return f"Invalid value for '{param}': expected {ctx.get('expected')}."
    if kind == "union_tag_invalid":
        field = str(ctx.get("discriminator", "type")).strip("'")
        tag = str(ctx.get("tag", "")).strip("'")
        return (
            f"Invalid value for '{param}.{field}': '{tag}'. Supported values are: "
            f"{ctx.get('expected_tags')}."
        )
    if kind == "value_error":
        return f"Invalid '{param}': {ctx.get('error', error['msg'])}."
    return f"Invalid '{param}': {error['msg']}."


def parse(model: type[T], data: Any) -> T:
    """Validate a request body; raise InvalidRequestError naming the field."""
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # The most specific error first: a wrong type inside a union reports
        # once per member; the deepest location is the useful one.
        error = max(errors, key=lambda e: len(e["loc"]))
        loc = tuple(error["loc"])
        param = _param_path(loc, data, keep_last=error["type"] == "missing")
        raise InvalidRequestError(
            _message(dict(error), param, data), param=param or None
        ) from None
