"""multipart/form-data bodies → the dict shape the pydantic inputs validate.

Form fields are all strings and nested objects arrive flattened the way the
SDK writes them (``expires_after[seconds]=3600``), so they are regrouped and
the named integer fields converted before the usual strict validation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from rest_framework.request import Request

from core.errors import InvalidRequestError

_NESTED = re.compile(r"^([^\[\]]+)\[([^\[\]]+)\]$")
_INTEGER = re.compile(r"^-?\d{1,18}$")


def multipart_split(
    request: Request,
    *,
    file_field: str,
    integer_fields: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], UploadedFile | None]:
    """(form fields as a nested dict, the one file or None).

    ``integer_fields`` are dotted paths (``expires_after.seconds``) whose
    digit strings become ints; anything else stays a string so a bad value
    is reported with its type. Raises InvalidRequestError for any file field
    other than ``file_field`` and when ``file_field`` is sent as text.
    """
    files = request.FILES
    for key in files:
        if key != file_field:
            raise InvalidRequestError(
                f"Unrecognized request argument supplied: {key}", param=key
            )
    data = request.data
    if not isinstance(data, Mapping):
        raise InvalidRequestError("The request body must be multipart/form-data.")
    form: dict[str, Any] = {}
    for key in data:
        if key in files:
            continue
        value: Any = data.get(key)
        match = _NESTED.match(key)
        path = f"{match[1]}.{match[2]}" if match else key
        if path in integer_fields and isinstance(value, str) and _INTEGER.match(value):
            value = int(value)
        if match:
            outer = form.get(match[1])
            if not isinstance(outer, dict):
                outer = form[match[1]] = {}
            outer[match[2]] = value
        else:
            form[key] = value
    if file_field in form:
        raise InvalidRequestError(
            f"Invalid '{file_field}': expected a file upload, but got a text field "
            "instead.",
            param=file_field,
        )
    return form, files.get(file_field)


def file_required(upload: UploadedFile | None, *, param: str) -> UploadedFile:
    if upload is None:
        raise InvalidRequestError(
            f"Missing required parameter: '{param}'.", param=param
        )
    return upload
