from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.models import LanguageModel

# What a new entry is assumed to support when nobody says otherwise.
DEFAULT_CAPABILITIES: dict[str, Any] = {"tools": True, "json_schema": True}


def language_model_register(
    *,
    name: str,
    base_urls: list[str],
    api_key: str = "",
    context_window: int = 8192,
    capabilities: dict[str, object] | None = None,
    served_name: str = "",
) -> LanguageModel:
    """Create or update a registry entry (idempotent: start-up calls it)."""
    model, _ = LanguageModel.objects.update_or_create(
        id=name,
        defaults={
            "base_urls": base_urls,
            "api_key": api_key,
            "context_window": context_window,
            "capabilities": capabilities or dict(DEFAULT_CAPABILITIES),
            "served_name": served_name,
            "is_active": True,
        },
    )
    return model


def _env_capabilities() -> dict[str, Any]:
    """settings.MODEL_CAPABILITIES; raises ImproperlyConfigured unless an object."""
    value = settings.MODEL_CAPABILITIES
    if not isinstance(value, dict):
        raise ImproperlyConfigured(
            f"MODEL_CAPABILITIES must be a JSON object, not {value!r}"
        )
    return value


def language_models_seed_from_env() -> LanguageModel | None:
    """Register DEFAULT_MODEL at MODEL_BASE_URL when both are set.

    Entries edited in admin are left alone except for the fields the
    environment names, so an operator's capability flags survive restarts:
    MODEL_CAPABILITIES, when set, overrides only the keys it lists. Raises
    ImproperlyConfigured when MODEL_CAPABILITIES is not a JSON object.
    """
    name = settings.DEFAULT_MODEL
    base_url = settings.MODEL_BASE_URL
    if not name or not base_url:
        return None
    capabilities = _env_capabilities()
    base_urls = [u.strip() for u in base_url.split(",") if u.strip()]
    existing = LanguageModel.objects.filter(id=name).first()
    if existing is not None:
        existing.base_urls = base_urls
        existing.api_key = settings.MODEL_API_KEY
        existing.is_active = True
        fields = ["base_urls", "api_key", "is_active"]
        if capabilities:
            existing.capabilities = {**(existing.capabilities or {}), **capabilities}
            fields.append("capabilities")
        existing.save(update_fields=fields)
        return existing
    return language_model_register(
        name=name,
        base_urls=base_urls,
        api_key=settings.MODEL_API_KEY,
        context_window=settings.MODEL_CONTEXT_WINDOW,
        capabilities={**DEFAULT_CAPABILITIES, **capabilities},
    )
