from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.auth import redact
from core.ids import random_token
from core.models import ApiKey, Project, hash_key

KEY_PREFIX = "sk-"


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    raw: str  # shown once, never stored


def api_key_generate_raw() -> str:
    return KEY_PREFIX + random_token(48)


def api_key_create(
    *, project: Project, name: str = "", raw: str | None = None
) -> IssuedKey:
    """Store a key for ``project``. ``raw`` imports a chosen key (bootstrap).

    Raises ValueError if ``raw`` is too short to be a secret.
    """
    raw = raw or api_key_generate_raw()
    if len(raw) < 8:
        raise ValueError("an API key must be at least 8 characters long")
    key = ApiKey.objects.create(
        project=project, name=name, hashed_key=hash_key(raw), redacted=redact(raw)
    )
    return IssuedKey(api_key=key, raw=raw)


def api_key_ensure(*, project: Project, raw: str, name: str) -> tuple[ApiKey, bool]:
    """Make ``raw`` a valid key of ``project``; (key, created).

    An existing key with that value is re-activated if it was revoked: the
    operator asked for this exact key to work.
    """
    hashed = hash_key(raw)
    existing = ApiKey.objects.filter(hashed_key=hashed).first()
    if existing is not None:
        if existing.revoked_at is not None:
            ApiKey.objects.filter(pk=existing.pk).update(revoked_at=None)
        return existing, False
    try:
        with transaction.atomic():
            return api_key_create(project=project, raw=raw, name=name).api_key, True
    except IntegrityError:  # created concurrently by another starting process
        return ApiKey.objects.get(hashed_key=hashed), False


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    api_key.refresh_from_db()
    return api_key
