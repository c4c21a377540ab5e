from __future__ import annotations

from typing import Any

import openai
import pytest
from django.test import override_settings

from core.models import LanguageModel
from core.services.models import language_models_seed_from_env
from tests.conftest import TEST_MODEL


@pytest.mark.live
def test_sdk_lists_and_retrieves_registered_models(sdk: Any) -> None:
    ids = [m.id for m in sdk.models.list()]
    assert TEST_MODEL in ids
    model = sdk.models.retrieve(TEST_MODEL)
    assert model.id == TEST_MODEL and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("nope")


def test_an_inactive_model_is_not_listed_or_usable(api: Any) -> None:
    LanguageModel.objects.filter(id=TEST_MODEL).update(is_active=False)
    assert TEST_MODEL not in [m["id"] for m in api.get("/v1/models").json()["data"]]
    response = api.post("/v1/assistants", {"model": TEST_MODEL}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def test_model_ids_with_slashes_resolve(api: Any) -> None:
    LanguageModel.objects.create(
        id="Qwen/Qwen2.5-7B-Instruct", base_urls=["http://x/v1"]
    )
    response = api.get("/v1/models/Qwen/Qwen2.5-7B-Instruct")
    assert response.status_code == 200
    assert response.json()["id"] == "Qwen/Qwen2.5-7B-Instruct"


@override_settings(
    DEFAULT_MODEL="env-model",
    MODEL_BASE_URL="http://a:8000/v1, http://b:8000/v1",
    MODEL_API_KEY="secret",
)
def test_the_registry_is_seeded_from_the_environment(db: Any) -> None:
    model = language_models_seed_from_env()
    assert model is not None
    stored = LanguageModel.objects.get(id="env-model")
    assert stored.base_urls == ["http://a:8000/v1", "http://b:8000/v1"]
    assert stored.api_key == "secret"
    stored.capabilities = {"tools": False}
    stored.save()
    language_models_seed_from_env()
    assert LanguageModel.objects.get(id="env-model").capabilities == {"tools": False}
