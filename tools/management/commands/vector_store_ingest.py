"""Ingest a folder of files into a vector store, with a progress bar.

    manage.py vector_store_ingest ./docs --name "Handbook"
    manage.py vector_store_ingest ./docs --vector-store vs_... --glob "*.md"
    manage.py vector_store_ingest ./docs --name Handbook --queue   # by workers

Each file is stored as a File (purpose ``assistants``) of the project and
added to the store through the same services as the API; by default this
process then ingests them itself (parse, chunk, embed), so no worker is
needed. With ``--queue`` the workers do it and the command follows their
progress. Files whose content is already in the store are skipped, so an
interrupted run can be rerun.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from django.core.files import File as DjangoFile
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from core.models import Project
from core.services.tenancy import default_project_ensure
from tools.models import VectorStore, VectorStoreFile
from tools.services.file import FileCreateInput, file_create
from tools.services.ingestion import vector_store_file_ingest
from tools.services.vector_store import (
    VectorStoreCreateInput,
    VectorStoreFileCreateInput,
    vector_store_create,
    vector_store_file_add,
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


class Command(BaseCommand):
    help = "Ingest every file of a folder into a vector store (progress bar)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("folder", type=Path)
        parser.add_argument("--project", help="project id (default project)")
        parser.add_argument("--vector-store", help="an existing store's id")
        parser.add_argument("--name", default="", help="name of a new store")
        parser.add_argument("--glob", default="**/*", help='e.g. "*.md"')
        parser.add_argument(
            "--queue",
            action="store_true",
            help="let the Celery workers ingest; wait and show their progress",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        folder: Path = options["folder"]
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder")
        project = (
            Project.objects.get(pk=options["project"])
            if options["project"]
            else default_project_ensure()
        )
        if options["vector_store"]:
            store = VectorStore.objects.get(pk=options["vector_store"], project=project)
        else:
            store = vector_store_create(
                project=project, data=VectorStoreCreateInput(name=options["name"])
            )
        paths = sorted(p for p in folder.glob(options["glob"]) if p.is_file())
        # Idempotent by content: a file whose bytes are already in the store
        # (by SHA-256) is skipped, so an interrupted run can simply be rerun.
        known = set(
            VectorStoreFile.objects.filter(vector_store=store).values_list(
                "file__sha256", flat=True
            )
        )
        rows: list[VectorStoreFile] = []
        for path in tqdm(paths, desc="adding files", unit="file"):
            if path.stat().st_size == 0:
                continue
            digest = _sha256(path)
            if digest in known:
                continue
            known.add(digest)
            with open(path, "rb") as fh:
                file = file_create(
                    project=project,
                    data=FileCreateInput(purpose="assistants"),
                    content=DjangoFile(fh, name=path.name),
                    filename=path.name,
                    mime_type=None,
                )
            rows.append(
                vector_store_file_add(
                    vector_store=store,
                    data=VectorStoreFileCreateInput(file_id=file.id),
                )
            )
        if options["queue"]:
            self._follow(store, len(rows))
        else:
            for row in tqdm(rows, desc="ingesting", unit="file"):
                vector_store_file_ingest(vsf_id=row.id)
        counts = {
            status: VectorStoreFile.objects.filter(
                vector_store=store, status=status
            ).count()
            for status in VectorStoreFile.Status.values
        }
        self.stdout.write(f"{store.id}: {counts}")
        for row in VectorStoreFile.objects.filter(
            vector_store=store, status=VectorStoreFile.Status.FAILED
        ).select_related("file"):
            self.stdout.write(f"  failed {row.file.filename}: {row.last_error}")

    def _follow(self, store: VectorStore, total: int) -> None:
        bar = tqdm(total=total, desc="ingesting (workers)", unit="file")
        done = 0
        while True:
            pending = VectorStoreFile.objects.filter(
                vector_store=store, status=VectorStoreFile.Status.IN_PROGRESS
            ).count()
            now_done = max(0, total - pending)
            bar.update(now_done - done)
            done = now_done
            if pending == 0:
                break
            time.sleep(0.5)
        bar.close()
