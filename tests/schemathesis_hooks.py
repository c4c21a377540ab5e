"""schemathesis hooks for ``tests/test_fuzz.py`` (loaded via SCHEMATHESIS_HOOKS).

One check replaces schemathesis' ``positive_data_acceptance``: the same rule
(a request the schema calls valid gets 2xx, or 401/403/404 for credentials
and ids that do not exist) with the few rejections no JSON Schema can
express, each matched on the error's ``param``/``code``, never on status
alone:

- a list cursor (``after``/``before``) must be the id of an object in that
  same list (400, param ``after``/``before``);
- a ``model`` must be registered, like any id must exist (400,
  ``model_not_found``);
- an image URL must name a public host (400 naming the ``url``: SSRF);
- an id in a body must name an object of the caller (400 "No file found
  with id ...", as OpenAI answers for a body reference);
- ``chunk_overlap_tokens`` at most half of ``max_chunk_size_tokens``;
- an upload that is no longer pending accepts no parts, completion or
  cancellation (400 naming its status), and completes only with parts
  holding exactly its ``bytes``;
- an upload may not exceed the deployment's size limit (a setting);
- a file or upload part may not be empty.

Every other error answer to a schema-valid request is a failure.
"""

from __future__ import annotations

import json
import re
from typing import Any

import schemathesis

ACCEPTED = {401, 403, 404}
CURSORS = {"after", "before"}
MISSING_REFERENCE = re.compile(r"^No [a-z ]+ found with id ")


def _error(text: str) -> dict[str, Any]:
    try:
        error = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return {}
    return error if isinstance(error, dict) else {}


def _semantic_rejection(error: dict[str, Any]) -> bool:
    param = str(error.get("param") or "")
    message = str(error.get("message") or "")
    return (
        param in CURSORS
        or error.get("code") == "model_not_found"
        or (param.endswith("image_url.url") and "public host" in message)
        or bool(MISSING_REFERENCE.match(message))
        or param.endswith("chunking_strategy.static")
        or ("upload" in message and "its status is" in message)
        or (param == "part_ids" and message.startswith("The parts hold"))
        or (param == "bytes" and "An upload can hold at most" in message)
        or (param in ("file", "data") and message.endswith("is empty."))
    )


@schemathesis.check
def valid_requests_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 400 or status in ACCEPTED:
        return None
    if status == 400 and _semantic_rejection(_error(response.text)):
        return None
    raise AssertionError(
        f"Schema-valid request rejected with {status}: {response.text[:300]}"
    )
