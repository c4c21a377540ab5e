"""/v1/files: upload, list, retrieve, download and delete, as the SDK uses them."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import openai
import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from tests.conftest import Tenant, admin_url, error_of, sdk_for, send_headers_only
from tools.api.v1.files import blob_response
from tools.models import File
from tools.services.file import CHUNK_SIZE, filename_sanitise

# Not valid UTF-8 anywhere a text decoder could silently "fix" it.
BINARY = bytes(range(256)) * 4 + b"\xff\xfe\x00\x80\xc3\x28"


def upload(
    api: Any,
    content: bytes = b"hello",
    name: str = "a.txt",
    extra: dict[str, str] | None = None,
) -> Any:
    return api.post(
        "/v1/files",
        {
            "file": SimpleUploadedFile(name, content, content_type="text/plain"),
            "purpose": "assistants",
            **(extra or {}),
        },
        format="multipart",
    )


# The SDK against the live server.


@pytest.mark.live
def test_sdk_round_trips_binary_bytes_and_a_unicode_filename(sdk: Any) -> None:
    # Over 2 MB, so the upload is spooled to a temporary file and moved
    # into storage, and the download streams in several chunks.
    data = BINARY + os.urandom(3 * 1024 * 1024)
    name = "résumé 数据 ✓.bin"
    created = sdk.files.create(file=(name, data), purpose="assistants")
    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.bytes == len(data)
    assert created.filename == name
    assert created.purpose == "assistants"
    assert created.status == "processed"
    assert created.expires_at is None
    fetched = sdk.files.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()
    downloaded = sdk.files.content(created.id)
    assert downloaded.content == data
    assert downloaded.response.headers["content-type"] == "application/octet-stream"
    disposition = downloaded.response.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=utf-8''r%C3%A9sum%C3%A9" in disposition


@pytest.mark.live
def test_sdk_uploads_an_open_file_under_its_base_name(sdk: Any, tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"# Notes\n")
    with path.open("rb") as handle:
        created = sdk.files.create(file=handle, purpose="user_data")
    assert created.filename == "notes.md"
    assert created.purpose == "user_data"
    assert sdk.files.content(created.id).content == b"# Notes\n"


@pytest.mark.live
def test_sdk_lists_by_purpose_and_auto_paginates_past_one_page(sdk: Any) -> None:
    assistants = [
        sdk.files.create(file=(f"{i}.txt", b"x"), purpose="assistants").id
        for i in range(103)
    ]
    vision = [
        sdk.files.create(file=("v.png", b"png"), purpose="vision").id for _ in range(2)
    ]
    listed = [f.id for f in sdk.files.list(purpose="assistants", limit=100)]
    # Newest first, every file once, across two pages.
    assert listed == list(reversed(assistants))
    first_page = sdk.files.list(purpose="assistants", limit=100)
    assert len(first_page.data) == 100 and first_page.has_more is True
    assert [f.id for f in sdk.files.list(purpose="vision")] == list(reversed(vision))
    everything = {f.id for f in sdk.files.list(order="asc", limit=100)}
    assert everything == set(assistants) | set(vision)


@pytest.mark.live
def test_sdk_delete_answers_the_deleted_object_then_everything_is_404(sdk: Any) -> None:
    created = sdk.files.create(file=("gone.txt", b"bye"), purpose="assistants")
    deleted = sdk.files.delete(created.id)
    assert deleted.id == created.id
    assert deleted.deleted is True
    assert deleted.object == "file"
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.files.delete(created.id)
    assert created.id not in {f.id for f in sdk.files.list()}


@pytest.mark.live
def test_another_projects_file_is_404_and_absent_from_its_lists(
    sdk: Any, live_server_url: str, other_live_tenant: Tenant
) -> None:
    created = sdk.files.create(file=("mine.txt", b"secret"), purpose="assistants")
    stranger = sdk_for(live_server_url, other_live_tenant)
    with pytest.raises(openai.NotFoundError):
        stranger.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        stranger.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        stranger.files.delete(created.id)
    assert created.id not in {f.id for f in stranger.files.list()}
    assert sdk.files.retrieve(created.id).id == created.id


@pytest.mark.live
@pytest.mark.parametrize("purpose", ["nonsense", "assistants_output"])
def test_a_purpose_clients_cannot_upload_is_a_400_naming_purpose(
    sdk: Any, purpose: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.files.create(file=("a.txt", b"a"), purpose=purpose)
    assert error_of(info.value)["param"] == "purpose"


@pytest.mark.live
def test_sdk_expires_after_sets_expires_at(sdk: Any) -> None:
    created = sdk.files.create(
        file=("t.txt", b"t"),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert created.expires_at == created.created_at + 3600
    assert sdk.files.retrieve(created.id).expires_at == created.expires_at


@pytest.mark.live
def test_an_oversize_upload_is_refused_with_413_before_its_body_is_sent(
    live_server_url: str, live_tenant: Tenant, sdk: Any
) -> None:
    status, body = send_headers_only(
        live_server_url,
        "/files",
        live_tenant.raw_key,
        int(settings.MAX_UPLOAD_BYTES) + 1024 * 1024,
    )
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"
    assert list(sdk.files.list()) == []


# In-process: storage, hashing and validation details.


def test_it_records_size_sha256_and_mime_type(api: Any, tenant: Tenant) -> None:
    response = upload(api, b"hello world", name="greeting.txt")
    assert response.status_code == 200
    file = File.objects.get(pk=response.json()["id"])
    assert file.project_id == tenant.project.id
    assert file.bytes == 11
    assert file.sha256 == hashlib.sha256(b"hello world").hexdigest()
    assert file.mime_type == "text/plain"
    # Stored under the id, never under the client's name.
    assert file.content.name == f"files/{tenant.project.id}/{file.id}"
    with default_storage.open(file.content.name, "rb") as handle:
        assert handle.read() == b"hello world"


def test_deleting_a_file_removes_its_blob_once_the_delete_commits(
    api: Any, django_capture_on_commit_callbacks: Any
) -> None:
    file_id = upload(api).json()["id"]
    name = str(File.objects.get(pk=file_id).content.name)
    assert default_storage.exists(name)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.delete(f"/v1/files/{file_id}")
        assert response.status_code == 200
        # Not before the commit: a rolled-back delete must keep its blob.
        assert default_storage.exists(name)
    for callback in callbacks:
        callback()
    assert not default_storage.exists(name)
    assert not File.objects.filter(pk=file_id).exists()


def test_an_empty_file_is_a_400_naming_file(api: Any) -> None:
    response = upload(api, b"")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"
    assert response.json()["error"]["message"] == "File is empty."
    assert File.objects.count() == 0


def test_a_missing_file_is_a_400_naming_file(api: Any) -> None:
    response = api.post("/v1/files", {"purpose": "assistants"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"


def test_a_file_sent_as_a_text_field_is_a_400_naming_file(api: Any) -> None:
    response = api.post(
        "/v1/files", {"purpose": "assistants", "file": "hello"}, format="multipart"
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"


def test_a_missing_purpose_is_a_400_naming_purpose(api: Any) -> None:
    response = api.post(
        "/v1/files", {"file": SimpleUploadedFile("a.txt", b"a")}, format="multipart"
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "purpose"


def test_an_unknown_form_field_is_rejected(api: Any) -> None:
    response = upload(api, extra={"colour": "red"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "Unrecognized request argument supplied: colour"
    )


def test_a_json_body_is_415(api: Any) -> None:
    response = api.post("/v1/files", {"purpose": "assistants"}, format="json")
    assert response.status_code == 415


@pytest.mark.parametrize("seconds", ["60", "abc", "99999999"])
def test_an_invalid_expires_after_is_a_400_naming_the_field(
    api: Any, seconds: str
) -> None:
    response = upload(
        api,
        extra={
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": seconds,
        },
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "expires_after.seconds"


def test_the_view_refuses_a_file_over_max_upload_bytes_with_413(api: Any) -> None:
    # The ASGI guard normally answers first; this is the check that holds
    # for every way in (WSGI, the test client, a chunked body).
    with override_settings(MAX_UPLOAD_BYTES=10):
        response = upload(api, b"x" * 11)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert File.objects.count() == 0
    with override_settings(MAX_UPLOAD_BYTES=10):
        assert upload(api, b"x" * 10).status_code == 200


def test_listing_with_an_unknown_purpose_is_a_400(api: Any) -> None:
    response = api.get("/v1/files", {"purpose": "pictures"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "purpose"


def test_listing_caps_limit_at_100(api: Any) -> None:
    response = api.get("/v1/files", {"limit": 101})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "limit"


def test_content_ignores_the_accept_header(api: Any) -> None:
    file_id = upload(api, BINARY, name="raw.bin").json()["id"]
    response = api.get(f"/v1/files/{file_id}/content", HTTP_ACCEPT="application/binary")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == BINARY
    assert response["Content-Length"] == str(len(BINARY))
    assert response["X-Content-Type-Options"] == "nosniff"


def test_content_of_an_unknown_file_is_a_json_404(api: Any) -> None:
    response = api.get("/v1/files/file-nope/content", HTTP_ACCEPT="application/binary")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "No file found with id 'file-nope'."


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\doc.txt", "doc.txt"),
        ("bad\x00na\x1fme.txt", "badname.txt"),
        ("..", "file"),
        ("", "file"),
    ],
)
def test_filenames_are_reduced_to_a_safe_base_name(raw: str, expected: str) -> None:
    assert filename_sanitise(raw) == expected


def test_long_filenames_are_cut_to_512_characters_keeping_the_extension() -> None:
    name = filename_sanitise("a" * 600 + ".jsonl")
    assert len(name) == 512
    assert name.endswith("a.jsonl")


def test_the_sdk_filename_for_a_file_object_is_its_base_name(api: Any) -> None:
    # What an SDK sends for open("/some/dir/x.txt"): Django keeps the last
    # component; the service would strip any separator that slipped through.
    stream = io.BytesIO(b"data")
    stream.name = "/some/dir/x.txt"
    response = api.post(
        "/v1/files", {"file": stream, "purpose": "assistants"}, format="multipart"
    )
    assert response.status_code == 200
    assert response.json()["filename"] == "x.txt"


def test_under_asgi_the_download_streams_through_an_async_iterator() -> None:
    # A sync iterator would be drained into memory whole by Django's ASGI
    # handler before the first byte is sent.
    data = os.urandom(CHUNK_SIZE * 2 + 5)
    handle = io.BytesIO(data)
    response = blob_response(handle, filename="big.bin", asynchronous=True)
    assert response.is_async is True
    assert response["Content-Length"] == str(len(data))

    async def drain() -> list[bytes]:
        return [chunk async for chunk in response]

    chunks = asyncio.run(drain())
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks] == [CHUNK_SIZE, CHUNK_SIZE, 5]
    assert handle.closed


def test_under_wsgi_the_download_streams_through_a_sync_iterator() -> None:
    response = blob_response(io.BytesIO(b"abc"), filename="s.bin", asynchronous=False)
    assert response.is_async is False
    assert b"".join(response) == b"abc"


def test_the_admin_lists_files_and_its_delete_removes_the_blob(
    api: Any, admin_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    file_id = upload(api, b"admin", name="admin.txt").json()["id"]
    name = str(File.objects.get(pk=file_id).content.name)
    changelist = admin_client.get("/admin/tools/file/", {"purpose": "assistants"})
    assert changelist.status_code == 200
    assert "admin.txt" in changelist.content.decode()
    assert admin_client.get(admin_url("tools.file", file_id)).status_code == 200
    assert admin_client.get("/admin/tools/vectorstore/").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            admin_url("tools.file", file_id, "delete"), {"post": "yes"}
        )
    assert response.status_code == 302
    assert not File.objects.filter(pk=file_id).exists()
    assert not default_storage.exists(name)


def test_an_expired_file_is_gone_at_once_and_swept_with_its_blob(
    api: Any, tenant: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from django.core.files.base import ContentFile
    from django.utils import timezone

    from tools.models import File
    from tools.services.file import files_expire_due

    file = File(
        project=tenant.project,
        filename="old.txt",
        purpose="assistants",
        bytes=3,
        expires_at=timezone.now(),
    )
    file.content.save("x", ContentFile(b"old"), save=False)
    file.save()
    storage, name = file.content.storage, file.content.name
    assert api.get(f"/v1/files/{file.id}").status_code == 404
    assert file.id not in [f["id"] for f in api.get("/v1/files").json()["data"]]
    with django_capture_on_commit_callbacks(execute=True):
        assert files_expire_due() == 1
    assert not File.objects.filter(pk=file.id).exists()
    assert not storage.exists(name)
