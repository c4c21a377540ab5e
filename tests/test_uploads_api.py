"""/v1/uploads: a large file sent in parts and assembled into a File."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from core.errors import InvalidRequestError
from tests.conftest import (
    Tenant,
    admin_url,
    error_of,
    make_tenant,
    sdk_for,
    send_headers_only,
)
from tools.api.v1.serializers import upload_to_wire
from tools.models import File, Upload, UploadPart
from tools.services.upload import (
    PartsReader,
    UploadCompleteInput,
    UploadCreateInput,
    upload_complete,
    upload_create,
    upload_part_create,
    uploads_expire_due,
)


def new_upload(sdk: Any, size: int, **overrides: Any) -> Any:
    params = {
        "bytes": size,
        "filename": "data.bin",
        "purpose": "assistants",
        "mime_type": "application/octet-stream",
        **overrides,
    }
    return sdk.uploads.create(**params)


# The SDK against the live server.


@pytest.mark.live
def test_upload_file_chunked_assembles_a_multi_part_file(
    sdk: Any, tmp_path: Path
) -> None:
    data = os.urandom(200_000) + b"\xff\xfe\x00"
    path = tmp_path / "paper.pdf"
    path.write_bytes(data)
    upload = sdk.uploads.upload_file_chunked(
        file=path,
        mime_type="application/pdf",
        purpose="assistants",
        part_size=64 * 1024,
        md5=hashlib.md5(data).hexdigest(),
    )
    assert upload.object == "upload"
    assert upload.status == "completed"
    assert upload.bytes == len(data)
    assert upload.filename == "paper.pdf"
    assert upload.file is not None
    assert upload.file.bytes == len(data)
    assert upload.file.filename == "paper.pdf"
    assert upload.file.purpose == "assistants"
    assert sdk.files.content(upload.file.id).content == data
    assert sdk.files.retrieve(upload.file.id).id == upload.file.id


@pytest.mark.live
def test_upload_file_chunked_works_for_in_memory_bytes(sdk: Any) -> None:
    data = b"line\n" * 5000
    upload = sdk.uploads.upload_file_chunked(
        file=data,
        filename="train.jsonl",
        bytes=len(data),
        mime_type="application/jsonl",
        purpose="fine-tune",
        part_size=7000,
    )
    assert upload.status == "completed"
    assert sdk.files.content(upload.file.id).content == data


@pytest.mark.live
def test_complete_assembles_parts_in_the_order_given_not_the_order_sent(
    sdk: Any,
) -> None:
    chunks = [b"A" * 1000, b"B" * 10, b"C" * 300]
    upload = new_upload(sdk, sum(map(len, chunks)))
    assert upload.status == "pending"
    assert upload.file is None
    assert upload.expires_at == upload.created_at + 3600
    parts = [sdk.uploads.parts.create(upload.id, data=chunk) for chunk in chunks]
    assert all(p.object == "upload.part" and p.upload_id == upload.id for p in parts)
    completed = sdk.uploads.complete(
        upload.id, part_ids=[parts[2].id, parts[0].id, parts[1].id]
    )
    assert completed.status == "completed"
    assert sdk.files.content(completed.file.id).content == (
        chunks[2] + chunks[0] + chunks[1]
    )


@pytest.mark.live
def test_an_md5_mismatch_is_a_400_and_the_upload_stays_completable(sdk: Any) -> None:
    upload = new_upload(sdk, 5)
    part = sdk.uploads.parts.create(upload.id, data=b"hello")
    with pytest.raises(openai.BadRequestError) as info:
        sdk.uploads.complete(upload.id, part_ids=[part.id], md5="0" * 32)
    assert error_of(info.value)["param"] == "md5"
    completed = sdk.uploads.complete(
        upload.id, part_ids=[part.id], md5=hashlib.md5(b"hello").hexdigest()
    )
    assert completed.status == "completed"
    assert sdk.files.content(completed.file.id).content == b"hello"


@pytest.mark.live
def test_parts_that_miss_the_declared_bytes_are_a_400(sdk: Any) -> None:
    upload = new_upload(sdk, 10)
    part = sdk.uploads.parts.create(upload.id, data=b"short")
    with pytest.raises(openai.BadRequestError) as info:
        sdk.uploads.complete(upload.id, part_ids=[part.id])
    assert error_of(info.value)["param"] == "part_ids"
    assert "5 bytes" in error_of(info.value)["message"]


@pytest.mark.live
def test_cancel_ends_the_upload_and_refuses_everything_after(sdk: Any) -> None:
    upload = new_upload(sdk, 3)
    part = sdk.uploads.parts.create(upload.id, data=b"abc")
    cancelled = sdk.uploads.cancel(upload.id)
    assert cancelled.status == "cancelled"
    assert cancelled.file is None
    with pytest.raises(openai.BadRequestError) as info:
        sdk.uploads.parts.create(upload.id, data=b"abc")
    assert "cancelled" in error_of(info.value)["message"]
    with pytest.raises(openai.BadRequestError):
        sdk.uploads.complete(upload.id, part_ids=[part.id])
    with pytest.raises(openai.BadRequestError):
        sdk.uploads.cancel(upload.id)


@pytest.mark.live
def test_a_completed_upload_refuses_parts_a_second_completion_and_cancel(
    sdk: Any,
) -> None:
    upload = new_upload(sdk, 3)
    part = sdk.uploads.parts.create(upload.id, data=b"abc")
    first = sdk.uploads.complete(upload.id, part_ids=[part.id])
    with pytest.raises(openai.BadRequestError) as info:
        sdk.uploads.complete(upload.id, part_ids=[part.id])
    assert "completed" in error_of(info.value)["message"]
    with pytest.raises(openai.BadRequestError):
        sdk.uploads.parts.create(upload.id, data=b"abc")
    with pytest.raises(openai.BadRequestError):
        sdk.uploads.cancel(upload.id)
    assert [f.id for f in sdk.files.list()] == [first.file.id]


@pytest.mark.live
def test_unknown_foreign_and_repeated_part_ids_are_400s_naming_the_index(
    sdk: Any,
) -> None:
    upload = new_upload(sdk, 2)
    other = new_upload(sdk, 1)
    mine = sdk.uploads.parts.create(upload.id, data=b"ab")
    theirs = sdk.uploads.parts.create(other.id, data=b"z")
    cases = [
        ([mine.id, "part_nope"], "part_ids[1]"),
        ([theirs.id], "part_ids[0]"),
        ([mine.id, mine.id], "part_ids[1]"),
    ]
    for part_ids, param in cases:
        with pytest.raises(openai.BadRequestError) as info:
            sdk.uploads.complete(upload.id, part_ids=part_ids)
        assert error_of(info.value)["param"] == param
    assert sdk.uploads.complete(upload.id, part_ids=[mine.id]).status == "completed"


@pytest.mark.live
def test_another_projects_upload_is_404(
    sdk: Any, live_server_url: str, other_live_tenant: Tenant
) -> None:
    upload = new_upload(sdk, 1)
    part = sdk.uploads.parts.create(upload.id, data=b"x")
    stranger = sdk_for(live_server_url, other_live_tenant)
    with pytest.raises(openai.NotFoundError):
        stranger.uploads.parts.create(upload.id, data=b"x")
    with pytest.raises(openai.NotFoundError):
        stranger.uploads.complete(upload.id, part_ids=[part.id])
    with pytest.raises(openai.NotFoundError):
        stranger.uploads.cancel(upload.id)
    assert sdk.uploads.complete(upload.id, part_ids=[part.id]).status == "completed"


@pytest.mark.live
@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"purpose": "nonsense"}, "purpose"),
        ({"purpose": "batch_output"}, "purpose"),
        ({"bytes": 0}, "bytes"),
        ({"filename": ""}, "filename"),
        ({"mime_type": ""}, "mime_type"),
    ],
)
def test_invalid_create_parameters_are_400s_naming_the_field(
    sdk: Any, overrides: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        new_upload(sdk, 10, **overrides)
    assert error_of(info.value)["param"] == param


@pytest.mark.live
def test_an_upload_larger_than_the_multipart_limit_is_a_400(sdk: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        new_upload(sdk, int(settings.MAX_MULTIPART_UPLOAD_BYTES) + 1)
    assert error_of(info.value)["param"] == "bytes"


@pytest.mark.live
def test_expires_after_on_the_upload_becomes_the_files_expiry(sdk: Any) -> None:
    upload = new_upload(sdk, 1, expires_after={"anchor": "created_at", "seconds": 7200})
    part = sdk.uploads.parts.create(upload.id, data=b"x")
    file = sdk.uploads.complete(upload.id, part_ids=[part.id]).file
    assert file.expires_at == file.created_at + 7200


@pytest.mark.live
def test_an_oversize_part_is_refused_with_413_before_its_body_is_sent(
    sdk: Any, live_server_url: str, live_tenant: Tenant
) -> None:
    upload = new_upload(sdk, 10)
    status, body = send_headers_only(
        live_server_url,
        f"/uploads/{upload.id}/parts",
        live_tenant.raw_key,
        int(settings.MAX_UPLOAD_PART_BYTES) + 1024 * 1024,
    )
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"
    # Nothing was stored: the upload can still be completed from scratch.
    part = sdk.uploads.parts.create(upload.id, data=b"0123456789")
    assert sdk.uploads.complete(upload.id, part_ids=[part.id]).file.bytes == 10


# In-process: storage clean-up, expiry, limits and races.


def create_upload(api: Any, size: int) -> str:
    response = api.post(
        "/v1/uploads",
        {
            "bytes": size,
            "filename": "d.bin",
            "purpose": "assistants",
            "mime_type": "application/octet-stream",
        },
        format="json",
    )
    assert response.status_code == 200
    return str(response.json()["id"])


def add_part(api: Any, upload_id: str, data: bytes) -> Any:
    return api.post(
        f"/v1/uploads/{upload_id}/parts",
        {"data": SimpleUploadedFile("blob", data)},
        format="multipart",
    )


def test_completion_records_sha256_and_deletes_the_parts_after_commit(
    api: Any, django_capture_on_commit_callbacks: Any
) -> None:
    upload_id = create_upload(api, 6)
    part_ids = [
        add_part(api, upload_id, b"abc").json()["id"],
        add_part(api, upload_id, b"def").json()["id"],
    ]
    unused = add_part(api, upload_id, b"zzz").json()["id"]
    names = [
        str(name)
        for name in UploadPart.objects.filter(upload_id=upload_id).values_list(
            "data", flat=True
        )
    ]
    assert len(names) == 3 and all(default_storage.exists(n) for n in names)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/v1/uploads/{upload_id}/complete", {"part_ids": part_ids}, format="json"
        )
    assert response.status_code == 200
    file = File.objects.get(pk=response.json()["file"]["id"])
    assert file.sha256 == hashlib.sha256(b"abcdef").hexdigest()
    assert file.mime_type == "application/octet-stream"
    assert Upload.objects.get(pk=upload_id).file_id == file.id
    # Parts, used or not (``unused``), are gone with their blobs.
    assert not UploadPart.objects.filter(pk__in=[*part_ids, unused]).exists()
    assert not any(default_storage.exists(n) for n in names)


def test_cancel_deletes_the_parts_after_commit(
    api: Any, django_capture_on_commit_callbacks: Any
) -> None:
    upload_id = create_upload(api, 3)
    add_part(api, upload_id, b"abc")
    name = str(UploadPart.objects.get(upload_id=upload_id).data.name)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/v1/uploads/{upload_id}/cancel")
    assert response.json()["status"] == "cancelled"
    assert not UploadPart.objects.filter(upload_id=upload_id).exists()
    assert not default_storage.exists(name)


def test_an_expired_upload_refuses_parts_and_is_recorded_expired(
    api: Any, django_capture_on_commit_callbacks: Any
) -> None:
    upload_id = create_upload(api, 6)
    add_part(api, upload_id, b"abc")
    name = str(UploadPart.objects.get(upload_id=upload_id).data.name)
    Upload.objects.filter(pk=upload_id).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = add_part(api, upload_id, b"def")
    assert response.status_code == 400
    assert "expired" in response.json()["error"]["message"]
    assert Upload.objects.get(pk=upload_id).status == Upload.Status.EXPIRED
    assert not UploadPart.objects.filter(upload_id=upload_id).exists()
    assert not default_storage.exists(name)


def test_a_pending_upload_past_its_deadline_reads_as_expired_and_cannot_complete(
    api: Any,
) -> None:
    upload_id = create_upload(api, 3)
    Upload.objects.filter(pk=upload_id).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    # Before any sweep or call has recorded it, the wire already says so.
    assert upload_to_wire(Upload.objects.get(pk=upload_id))["status"] == "expired"
    response = api.post(
        f"/v1/uploads/{upload_id}/complete", {"part_ids": []}, format="json"
    )
    assert response.status_code == 400
    assert "expired" in response.json()["error"]["message"]


def test_the_sweep_expires_only_stale_pending_uploads(tenant: Tenant) -> None:
    def make(**fields: Any) -> Upload:
        return Upload.objects.create(
            project=tenant.project,
            filename="f",
            purpose="assistants",
            bytes=1,
            mime_type="text/plain",
            **fields,
        )

    past = timezone.now() - timedelta(minutes=1)
    stale = make(expires_at=past)
    fresh = make()
    done = make(expires_at=past, status=Upload.Status.COMPLETED)
    assert uploads_expire_due() == 1
    assert uploads_expire_due() == 0
    statuses = dict(
        Upload.objects.filter(pk__in=[stale.pk, fresh.pk, done.pk]).values_list(
            "pk", "status"
        )
    )
    assert statuses == {stale.pk: "expired", fresh.pk: "pending", done.pk: "completed"}


def test_a_part_over_max_upload_part_bytes_is_413_and_not_stored(api: Any) -> None:
    upload_id = create_upload(api, 100)
    with override_settings(MAX_UPLOAD_PART_BYTES=10):
        response = add_part(api, upload_id, b"x" * 11)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert not UploadPart.objects.filter(upload_id=upload_id).exists()


def test_stored_parts_cannot_pass_the_multipart_limit(api: Any) -> None:
    upload_id = create_upload(api, 8)
    with override_settings(MAX_MULTIPART_UPLOAD_BYTES=8):
        assert add_part(api, upload_id, b"x" * 8).status_code == 200
        response = add_part(api, upload_id, b"x")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "data"
    assert UploadPart.objects.filter(upload_id=upload_id).count() == 1


def test_an_empty_part_is_a_400_naming_data(api: Any) -> None:
    upload_id = create_upload(api, 3)
    response = add_part(api, upload_id, b"")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "data"


def test_a_missing_part_is_a_400_naming_data(api: Any) -> None:
    upload_id = create_upload(api, 3)
    response = api.post(f"/v1/uploads/{upload_id}/parts", {}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "data"


@pytest.mark.django_db(transaction=True)
def test_two_racing_completions_create_exactly_one_file() -> None:
    tenant = make_tenant()
    upload = upload_create(
        project=tenant.project,
        data=UploadCreateInput(
            filename="race.bin",
            purpose="assistants",
            bytes=4,
            mime_type="application/octet-stream",
        ),
    )
    part = upload_part_create(upload=upload, content=ContentFile(b"race", "p"))
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def complete() -> None:
        try:
            barrier.wait()
            upload_complete(
                upload=Upload.objects.get(pk=upload.pk),
                data=UploadCompleteInput(part_ids=[part.id]),
            )
            outcomes.append("completed")
        except InvalidRequestError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=complete) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["completed", "refused"]
    files = File.objects.filter(project=tenant.project)
    assert files.count() == 1
    assert Upload.objects.get(pk=upload.pk).file_id == files.get().id
    # The loser's assembled blob was removed: one blob for one file.
    _, stored = default_storage.listdir(f"files/{tenant.project.id}")
    assert stored == [files.get().id]


def test_the_parts_reader_reads_across_parts_and_trusts_only_a_single_pass(
    tenant: Tenant,
) -> None:
    upload = upload_create(
        project=tenant.project,
        data=UploadCreateInput(
            filename="r.bin",
            purpose="assistants",
            bytes=9,
            mime_type="application/octet-stream",
        ),
    )
    parts = [
        upload_part_create(upload=upload, content=ContentFile(chunk, "p"))
        for chunk in (b"abc", b"de", b"fghi")
    ]
    reader = PartsReader(parts)
    assert reader.read(4) == b"abcd"
    assert reader.read() == b"efghi"
    assert reader.digests() == (
        hashlib.sha256(b"abcdefghi").hexdigest(),
        hashlib.md5(b"abcdefghi").hexdigest(),
    )
    reader.seek(-3, io.SEEK_END)
    assert reader.read(10) == b"ghi"
    reader.seek(2)
    assert reader.read(3) == b"cde"
    reader.close()
    skipping = PartsReader(parts)
    skipping.seek(5)
    assert skipping.read() == b"fghi"
    assert skipping.digests() is None  # a backend that skipped: re-hash
    skipping.close()


def test_completion_rehashes_the_stored_blob_when_the_backend_read_out_of_order(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PartsReader, "digests", lambda self: None)
    upload_id = create_upload(api, 6)
    part_id = add_part(api, upload_id, b"abcdef").json()["id"]
    wrong = api.post(
        f"/v1/uploads/{upload_id}/complete",
        {"part_ids": [part_id], "md5": "0" * 32},
        format="json",
    )
    assert wrong.status_code == 400
    response = api.post(
        f"/v1/uploads/{upload_id}/complete",
        {"part_ids": [part_id], "md5": hashlib.md5(b"abcdef").hexdigest()},
        format="json",
    )
    assert response.status_code == 200
    file = File.objects.get(pk=response.json()["file"]["id"])
    assert file.sha256 == hashlib.sha256(b"abcdef").hexdigest()


def test_the_admin_shows_an_upload_with_its_parts(api: Any, admin_client: Any) -> None:
    upload_id = create_upload(api, 3)
    part_id = add_part(api, upload_id, b"abc").json()["id"]
    assert admin_client.get("/admin/tools/upload/").status_code == 200
    page = admin_client.get(admin_url("tools.upload", upload_id))
    assert page.status_code == 200
    assert part_id in page.content.decode()
