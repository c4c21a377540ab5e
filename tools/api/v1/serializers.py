"""The wire contract for files and uploads: model rows → the JSON clients read.

Plain functions, as in ``assistants.api.v1.serializers``; the documented
shapes are the pydantic models in ``schemas.py``.
"""

from __future__ import annotations

from typing import Any

from core.models import unix_time
from tools.models import File, Upload, UploadPart
from tools.services.upload import upload_status


def file_to_wire(f: File) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": unix_time(f.created_at),
        "filename": f.filename,
        "purpose": f.purpose,
        # Files are usable as soon as they are stored; OpenAI deprecated the
        # status fields but the SDK's type still requires `status`.
        "status": "processed",
        "status_details": None,
        "expires_at": unix_time(f.expires_at),
    }


def upload_to_wire(u: Upload) -> dict[str, Any]:
    return {
        "id": u.id,
        "object": "upload",
        "bytes": u.bytes,
        "created_at": unix_time(u.created_at),
        "filename": u.filename,
        "purpose": u.purpose,
        "status": upload_status(u),
        "expires_at": unix_time(u.expires_at),
        "file": file_to_wire(u.file) if u.file is not None else None,
    }


def upload_part_to_wire(p: UploadPart) -> dict[str, Any]:
    return {
        "id": p.id,
        "object": "upload.part",
        "created_at": unix_time(p.created_at),
        "upload_id": p.upload_id,
    }
