from __future__ import annotations

from django.conf import settings

from core.models import LanguageModel


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
            "capabilities": capabilities or {"tools": True, "json_schema": True},
            "served_name": served_name,
            "is_active": True,
        },
    )
    return model


def language_models_seed_from_env() -> LanguageModel | None:
    """Register DEFAULT_MODEL at MODEL_BASE_URL when both are set.

    Entries edited in admin are left alone except for the fields the
    environment names, so an operator's capability flags survive restarts.
    """
    name = settings.DEFAULT_MODEL
    base_url = settings.MODEL_BASE_URL
    if not name or not base_url:
        return None
    existing = LanguageModel.objects.filter(id=name).first()
    if existing is not None:
        existing.base_urls = [u.strip() for u in base_url.split(",") if u.strip()]
        existing.api_key = settings.MODEL_API_KEY
        existing.is_active = True
        existing.save(update_fields=["base_urls", "api_key", "is_active"])
        return existing
    return language_model_register(
        name=name,
        base_urls=[u.strip() for u in base_url.split(",") if u.strip()],
        api_key=settings.MODEL_API_KEY,
        context_window=settings.MODEL_CONTEXT_WINDOW,
    )
