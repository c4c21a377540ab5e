from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, cast

from django.db.models import Model, QuerySet
from django.db.models.signals import post_delete, post_save

from core.db import select_one
from core.errors import InvalidRequestError, NotFoundError
from core.models import LanguageModel
from core.ttlcache import TtlCache

M = TypeVar("M", bound=Model)


def get_or_404(queryset: QuerySet[M], object_id: str, kind: str) -> M:
    """The object ``object_id`` of an already-scoped queryset, or
    NotFoundError: "No <kind> found with id '<object_id>'." (OpenAI's text)."""
    # [:1], not .first(): a primary-key lookup needs no ORDER BY.
    found = list(queryset.filter(pk=object_id)[:1])
    if not found:
        raise NotFoundError.for_object(kind, object_id)
    return found[0]


def get_by_or_404(model: type[M], object_id: str, kind: str, **scope: Any) -> M:
    """``get_or_404`` for a scope of plain column equalities
    (``project_id=...``), read without the ORM's query compilation: the
    retrieves on every request path."""
    found = select_one(model, **{model._meta.pk.attname: object_id}, **scope)
    if found is None:
        raise NotFoundError.for_object(kind, object_id)
    return cast(M, found)


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


# Registry rows, cached per process for a few seconds: every run creation
# and every run step needs one (a query each cost about as much as the rest
# of run creation's lookups). Only rows that exist are cached, and a save or
# delete in this process drops the entry, so registering a model is seen at
# once; an operator's edit in another process applies within
# MODEL_CACHE_SECONDS.
MODEL_CACHE_SECONDS = 5.0
_models: TtlCache[str, LanguageModel] = TtlCache(MODEL_CACHE_SECONDS)


def language_model_cached(model_id: str) -> LanguageModel | None:
    """The active registry row ``model_id``, or None."""
    return _models.get(
        model_id, lambda: language_models_active().filter(id=model_id).first()
    )


def _forget_model(sender: Any, instance: LanguageModel, **kwargs: Any) -> None:
    _models.forget(instance.pk)


post_save.connect(_forget_model, sender=LanguageModel, dispatch_uid="model-cache")
post_delete.connect(_forget_model, sender=LanguageModel, dispatch_uid="model-cache")


def language_model_require(*, model_id: str, param: str = "model") -> LanguageModel:
    """A registered model for a write; 400 naming ``param`` otherwise."""
    model = language_model_cached(model_id)
    if model is None:
        raise InvalidRequestError(
            f"The model '{model_id}' does not exist or you do not have access to it.",
            param=param,
            code="model_not_found",
        )
    return model
