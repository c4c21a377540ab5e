from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from django.db.models import Model, QuerySet

from core.errors import InvalidRequestError, NotFoundError
from core.models import LanguageModel

M = TypeVar("M", bound=Model)


def get_or_404(queryset: QuerySet[M], object_id: str, kind: str) -> M:
    """The object ``object_id`` of an already-scoped queryset, or
    NotFoundError: "No <kind> found with id '<object_id>'." (OpenAI's text)."""
    # [:1], not .first(): a primary-key lookup needs no ORDER BY.
    found = list(queryset.filter(pk=object_id)[:1])
    if not found:
        raise NotFoundError.for_object(kind, object_id)
    return found[0]


def ids_require(
    queryset: QuerySet[M], refs: Sequence[tuple[str, str]], kind: str
) -> None:
    """Every ``(id, param)`` names an object of the (scoped) ``queryset``;
    otherwise InvalidRequestError (400) naming the first stranger's ``param``.
    One query however many references there are."""
    if not refs:
        return
    found = set(
        queryset.filter(pk__in={object_id for object_id, _ in refs}).values_list(
            "pk", flat=True
        )
    )
    for object_id, param in refs:
        if object_id not in found:
            raise InvalidRequestError(
                f"No {kind} found with id '{object_id}'.", param=param
            )


def language_models_active() -> QuerySet[LanguageModel]:
    return LanguageModel.objects.filter(is_active=True)


def language_model_get(*, model_id: str) -> LanguageModel:
    model = language_models_active().filter(id=model_id).first()
    if model is None:
        raise NotFoundError(
            f"The model '{model_id}' does not exist.",
            code="model_not_found",
            param="model",
        )
    return model


def language_model_require(*, model_id: str, param: str = "model") -> LanguageModel:
    """A registered model for a write; 400 naming ``param`` otherwise."""
    model = language_models_active().filter(id=model_id).first()
    if model is None:
        raise InvalidRequestError(
            f"The model '{model_id}' does not exist or you do not have access to it.",
            param=param,
            code="model_not_found",
        )
    return model
