from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.conftest import TEST_MODEL, Tenant


@pytest.mark.live
def test_sdk_creates_retrieves_updates_and_deletes_an_assistant(sdk: Any) -> None:
    created = sdk.beta.assistants.create(
        model=TEST_MODEL,
        name="Math tutor",
        instructions="Be brief.",
        tools=[
            {"type": "code_interpreter"},
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "parameters": {
                        "type": "object",
                        "properties": {"q": {"type": "string"}},
                    },
                },
            },
        ],
        metadata={"team": "a"},
        temperature=0.5,
    )
    assert created.id.startswith("asst_")
    assert created.object == "assistant"
    assert created.tools[1].function.name == "lookup"
    fetched = sdk.beta.assistants.retrieve(created.id)
    assert fetched.name == "Math tutor" and fetched.temperature == 0.5
    updated = sdk.beta.assistants.update(created.id, name="Renamed", metadata={})
    assert updated.name == "Renamed" and updated.metadata == {}
    assert updated.instructions == "Be brief."
    deleted = sdk.beta.assistants.delete(created.id)
    assert deleted.deleted is True and deleted.id == created.id
    with pytest.raises(openai.NotFoundError):
        sdk.beta.assistants.retrieve(created.id)


@pytest.mark.live
def test_an_unregistered_model_is_a_400_naming_model(sdk: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.beta.assistants.create(model="no-such-model")
    assert info.value.body["param"] == "model"


def test_a_wrong_type_names_the_field(api: Any) -> None:
    response = api.post(
        "/v1/assistants", {"model": TEST_MODEL, "name": 5}, format="json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "name"
    assert error["type"] == "invalid_request_error"


def test_a_bad_function_name_inside_tools_is_named_precisely(api: Any) -> None:
    response = api.post(
        "/v1/assistants",
        {
            "model": TEST_MODEL,
            "tools": [
                {"type": "code_interpreter"},
                {"type": "function", "function": {"name": "has space"}},
            ],
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tools[1].function.name"


def test_an_unknown_tool_type_is_rejected(api: Any) -> None:
    response = api.post(
        "/v1/assistants",
        {"model": TEST_MODEL, "tools": [{"type": "web_browser"}]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"].startswith("tools[0]")


def test_metadata_limits_are_enforced(api: Any) -> None:
    too_many = {f"k{i}": "v" for i in range(17)}
    response = api.post(
        "/v1/assistants", {"model": TEST_MODEL, "metadata": too_many}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "metadata"


def test_an_unknown_argument_is_rejected(api: Any) -> None:
    response = api.post(
        "/v1/assistants", {"model": TEST_MODEL, "colour": "red"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "Unrecognized request argument supplied: colour"
    )


def test_a_foreign_file_in_tool_resources_is_rejected(api: Any, tenant: Tenant) -> None:
    response = api.post(
        "/v1/assistants",
        {
            "model": TEST_MODEL,
            "tool_resources": {"code_interpreter": {"file_ids": ["file-doesnotexist"]}},
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == (
        "tool_resources.code_interpreter.file_ids[0]"
    )


def test_more_than_one_vector_store_is_rejected(api: Any) -> None:
    response = api.post(
        "/v1/assistants",
        {
            "model": TEST_MODEL,
            "tool_resources": {"file_search": {"vector_store_ids": ["vs_a", "vs_b"]}},
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == (
        "tool_resources.file_search.vector_store_ids"
    )


def test_an_extra_field_inside_a_tagged_tool_is_named_at_its_own_path(api: Any) -> None:
    response = api.post(
        "/v1/assistants",
        {
            "model": TEST_MODEL,
            "tools": [{"type": "function", "function": {"name": "f", "colour": 1}}],
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tools[0].function.colour"


def test_an_unknown_tool_type_message_names_the_value_once(api: Any) -> None:
    response = api.post(
        "/v1/assistants",
        {"model": TEST_MODEL, "tools": [{"type": "web_browser"}]},
        format="json",
    )
    message = response.json()["error"]["message"]
    assert "'tools[0].type': 'web_browser'" in message
