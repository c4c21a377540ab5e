"""``GET /v1/models`` and ``GET /v1/models/{id}``."""

from __future__ import annotations

from typing import Any, Literal

from drf_spectacular.utils import extend_schema
from pydantic import BaseModel
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.models import LanguageModel
from core.schemas import ERRORS
from core.selectors import language_model_get, language_models_active


class ModelObject(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelObject]


def model_to_wire(model: LanguageModel) -> dict[str, Any]:
    return {
        "id": model.id,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": model.owned_by,
    }


class ModelListApi(APIView):
    @extend_schema(
        operation_id="listModels",
        responses={200: ModelList, **ERRORS},
        tags=["models"],
    )
    def get(self, request: Request) -> Response:
        models = language_models_active().order_by("created_at", "id")
        return Response({"object": "list", "data": [model_to_wire(m) for m in models]})


class ModelDetailApi(APIView):
    @extend_schema(
        operation_id="retrieveModel",
        responses={200: ModelObject, **ERRORS},
        tags=["models"],
    )
    def get(self, request: Request, model_id: str) -> Response:
        return Response(model_to_wire(language_model_get(model_id=model_id)))
