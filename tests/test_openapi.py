"""The served schema documents the real shapes, and the docs work offline."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import TEST_MODEL


def test_the_schema_is_openapi_3_and_covers_the_api(client: Any, db: Any) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    for path in ("/v1/assistants", "/v1/assistants/{assistant_id}", "/v1/models"):
        assert path in schema["paths"], path


def test_the_docs_ui_loads_its_assets_locally(client: Any, db: Any) -> None:
    html = client.get("/docs/").content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
    # The asset the page references is served by us.
    import re

    asset = re.search(r'src="([^"]*swagger-ui-bundle\.js)"', html)
    assert asset is not None
    assert client.get(asset.group(1)).status_code == 200


def _resolve(schema: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = schema
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


@pytest.mark.live
def test_live_responses_validate_against_the_served_schema(
    live_server_url: str, http: httpx.Client
) -> None:
    schema = httpx.get(live_server_url.removesuffix("/v1") + "/openapi.json").json()
    created = http.post("/assistants", json={"model": TEST_MODEL, "name": "s"})
    error = http.post("/assistants", json={"model": 1})
    listed = http.get("/assistants")
    op = schema["paths"]["/v1/assistants"]
    cases = [
        (op["post"]["responses"]["200"], created),
        (op["post"]["responses"]["400"], error),
        (op["get"]["responses"]["200"], listed),
    ]
    for spec, response in cases:
        body_schema = spec["content"]["application/json"]["schema"]
        resolver_schema = {**body_schema, "components": schema["components"]}
        if "$ref" in body_schema:
            resolver_schema = {
                **_resolve(schema, body_schema["$ref"]),
                "components": schema["components"],
            }
        jsonschema.validate(response.json(), resolver_schema)
