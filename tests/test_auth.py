"""Keys and tenancy: who may see what."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from django.utils import timezone

from core.models import ApiKey, hash_key
from core.services.keys import api_key_create, api_key_ensure, api_key_revoke
from tests.conftest import TEST_MODEL, Tenant, make_tenant


def test_keys_are_stored_hashed_and_shown_once(db: Any) -> None:
    tenant = make_tenant()
    stored = ApiKey.objects.get(pk=tenant.key.pk)
    assert stored.hashed_key == hash_key(tenant.raw_key)
    assert tenant.raw_key not in {stored.hashed_key, stored.redacted, stored.name}
    assert stored.redacted.startswith(tenant.raw_key[:6])


def test_a_missing_key_is_a_401_with_the_openai_body(client: Any, db: Any) -> None:
    response = client.get("/v1/assistants")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "API key" in error["message"]


def test_an_unknown_key_is_a_401_that_redacts_the_key(client: Any, db: Any) -> None:
    response = client.get(
        "/v1/assistants", HTTP_AUTHORIZATION="Bearer sk-not-a-real-key-123456"
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert "sk-not-a-real-key-123456" not in error["message"]


def test_a_malformed_authorization_header_is_a_401(client: Any, db: Any) -> None:
    response = client.get("/v1/assistants", HTTP_AUTHORIZATION="Basic abc")
    assert response.status_code == 401


def test_a_revoked_key_is_a_401(api: Any, tenant: Tenant) -> None:
    assert api.get("/v1/assistants").status_code == 200
    api_key_revoke(api_key=tenant.key)
    assert api.get("/v1/assistants").status_code == 401


def _prepared_key_lookups() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements "
            "WHERE statement LIKE %s AND statement LIKE %s",
            ["%core_apikey%", "%hashed_key%"],
        )
        return int(cursor.fetchone()[0])


def test_the_key_lookup_is_prepared_once_per_connection(
    api: Any, tenant: Tenant
) -> None:
    # The test client's requests use this test's connection: what it
    # prepared shows in the session's pg_prepared_statements. One statement
    # however many requests, and a revoked key is still refused by it.
    for _ in range(3):
        assert api.get("/v1/assistants").status_code == 200
    assert _prepared_key_lookups() == 1
    api_key_revoke(api_key=tenant.key)
    assert api.get("/v1/assistants").status_code == 401
    assert _prepared_key_lookups() == 1


def test_the_key_lookup_is_not_prepared_when_turned_off(
    api: Any, settings: Any
) -> None:
    from django.db import connection

    settings.DB_PREPARED_STATEMENTS = False
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # what earlier tests prepared
    assert api.get("/v1/assistants").status_code == 200
    assert _prepared_key_lookups() == 0


def test_last_used_is_recorded(api: Any, tenant: Tenant) -> None:
    assert ApiKey.objects.get(pk=tenant.key.pk).last_used_at is None
    api.get("/v1/models")
    assert ApiKey.objects.get(pk=tenant.key.pk).last_used_at is not None


def test_ensuring_a_bootstrap_key_is_idempotent_and_reactivates(db: Any) -> None:
    tenant = make_tenant()
    key, created = api_key_ensure(project=tenant.project, raw="sk-chosen-key", name="b")
    assert created
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    again, created_again = api_key_ensure(
        project=tenant.project, raw="sk-chosen-key", name="b"
    )
    assert not created_again and again.pk == key.pk
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_a_too_short_key_is_refused(db: Any) -> None:
    tenant = make_tenant()
    with pytest.raises(ValueError):
        api_key_create(project=tenant.project, raw="short")


@pytest.mark.live
def test_sdk_raises_authentication_error_for_a_revoked_key(
    sdk: Any, live_tenant: Tenant, django_db_blocker: Any
) -> None:
    sdk.beta.assistants.list()
    with django_db_blocker.unblock():
        api_key_revoke(api_key=live_tenant.key)
    with pytest.raises(openai.AuthenticationError):
        sdk.beta.assistants.list()


@pytest.mark.live
def test_another_projects_assistant_is_a_404_and_never_listed(
    sdk: Any, live_server_url: str, other_live_tenant: Tenant
) -> None:
    mine = sdk.beta.assistants.create(model=TEST_MODEL, name="mine")
    other = openai.OpenAI(
        base_url=live_server_url, api_key=other_live_tenant.raw_key, max_retries=0
    )
    with pytest.raises(openai.NotFoundError):
        other.beta.assistants.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.beta.assistants.update(mine.id, name="stolen")
    with pytest.raises(openai.NotFoundError):
        other.beta.assistants.delete(mine.id)
    assert mine.id not in [a.id for a in other.beta.assistants.list()]
    assert sdk.beta.assistants.retrieve(mine.id).name == "mine"


@pytest.mark.live
def test_a_project_of_the_same_organization_is_also_a_stranger(
    live_server_url: str, live_tenant: Tenant, django_db_blocker: Any
) -> None:
    with django_db_blocker.unblock():
        sibling = make_tenant(organization=live_tenant.organization)
    created = httpx.post(
        f"{live_server_url}/assistants",
        json={"model": TEST_MODEL},
        headers=live_tenant.headers,
    ).json()
    response = httpx.get(
        f"{live_server_url}/assistants/{created['id']}", headers=sibling.headers
    )
    assert response.status_code == 404
