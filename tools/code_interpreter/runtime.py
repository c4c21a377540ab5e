"""code_interpreter on our side: the model's Python runs in the thread's
sandbox session (sandbox/), files go in and out of /mnt/data.

One session per (project, thread): variables persist between calls of a
thread and are never seen by another. Input files (``tool_resources`` and
message attachments) are copied in once per session; files the code writes
or changes in /mnt/data come back as File objects (purpose
``assistants_output``): images as ``image`` outputs, other files for
``file_path`` annotations. Figures shown with matplotlib come back as images.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import mimetypes
import threading
from pathlib import PurePosixPath
from typing import Any, ClassVar

from celery.signals import (
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from django.conf import settings
from django.core.files.base import ContentFile
from docker.errors import DockerException
from requests import RequestException

from core.observability import metrics
from sandbox import (
    ExecResult,
    SandboxConfig,
    SandboxError,
    SandboxUnavailable,
    Session,
    SessionManager,
    docker_client,
)
from tools.models import File
from tools.runtime import (
    OutputFile,
    ToolCallContext,
    ToolError,
    ToolOutcome,
    register,
)
from tools.services.file import file_row_save, file_store, filename_sanitise

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
DESCRIPTION = (
    "Run Python 3 code in a stateful sandbox (variables persist between "
    "calls of this conversation). numpy, pandas, matplotlib and scipy are "
    "installed; there is no internet access. Files the user provided are in "
    "/mnt/data; save files you produce to /mnt/data and refer to them as "
    "sandbox:/mnt/data/<name>. Print what you need to see."
)

_lock = threading.Lock()
_manager: SessionManager | None = None


def sandbox_config() -> SandboxConfig:
    """The sandbox limits from the settings (read at call time)."""
    extra = (
        {"state_dir": settings.SANDBOX_STATE_DIR} if settings.SANDBOX_STATE_DIR else {}
    )
    return SandboxConfig(
        **extra,
        image=settings.SANDBOX_IMAGE,
        memory_mb=settings.SANDBOX_MEMORY_MB,
        cpus=settings.SANDBOX_CPUS,
        pids=settings.SANDBOX_PIDS,
        tmp_mb=settings.SANDBOX_TMP_MB,
        data_mb=settings.SANDBOX_DATA_MB,
        timeout_seconds=settings.SANDBOX_TIMEOUT_SECONDS,
        idle_seconds=settings.SANDBOX_IDLE_SECONDS,
        pool_size=settings.SANDBOX_POOL_SIZE,
        output_cap=settings.SANDBOX_OUTPUT_BYTES,
        max_file_bytes=settings.SANDBOX_MAX_FILE_BYTES,
    )


def session_manager() -> SessionManager:
    """This process's manager, created on first use.

    Raises SandboxUnavailable when no Docker engine answers (tried again on
    the next call: the engine may come up later)."""
    global _manager
    with _lock:
        if _manager is None:
            _manager = SessionManager(sandbox_config(), docker_client())
            _manager.on_change = metrics.sandbox_sessions
            # Its warm pool goes with the process: a process that ends
            # normally (a web process, the test suite, a shell) had left
            # its pool's containers running until another process's reaper
            # found their owner gone. Worker children, which leave through
            # os._exit, stop theirs at worker_process_shutdown.
            atexit.register(_manager.shutdown)
        return _manager


def session_key(project_id: str, thread_id: str) -> str:
    return f"{project_id}:{thread_id}"


def output_file_create(*, project_id: str, name: str, data: bytes) -> File:
    """Record bytes the sandbox produced as a File (``assistants_output``)."""
    filename = filename_sanitise(name)
    file = File(
        project_id=project_id,
        filename=filename,
        purpose="assistants_output",
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        mime_type=mimetypes.guess_type(filename)[0] or "application/octet-stream",
    )
    file_store(file, ContentFile(data, name=filename))
    file_row_save(file)
    return file


def _copy_inputs(session: Session, ctx: ToolCallContext) -> list[str]:
    """Copy the call's input files into /mnt/data once per session; returns
    the paths copied now."""
    resources = ctx.resources.get("code_interpreter") or {}
    wanted = [*resources.get("file_ids", []), *ctx.attachment_file_ids]
    missing = [fid for fid in dict.fromkeys(wanted) if fid not in session.copied]
    if not missing:
        return []
    files = File.objects.filter(project_id=ctx.project_id, id__in=missing)
    taken = {PurePosixPath(path).name for path in session.copied.values()}
    copied: list[str] = []
    for file in sorted(files, key=lambda f: missing.index(f.id)):
        name = filename_sanitise(file.filename)
        if name in taken:
            # Two inputs of one name: the later one gets its id in front.
            name = f"{file.id}-{name}"
        try:
            with file.content.open("rb") as fh:
                data = fh.read(session.config.max_file_bytes + 1)
        except FileNotFoundError:
            logger.warning("code_interpreter: the blob of %s is gone", file.id)
            continue
        path = session.put_file(name, data)
        session.copied[file.id] = path
        taken.add(name)
        copied.append(path)
    return copied


def _logs(result: ExecResult) -> str:
    parts = [result.stdout]
    if result.stderr:
        parts.append(result.stderr)
    if result.error:
        parts.append(result.error)
    return "\n".join(part.rstrip("\n") for part in parts if part).strip("\n")


class CodeInterpreter:
    type: ClassVar[str] = "code_interpreter"
    streamed_argument: ClassVar[str | None] = "code"

    def engine_function(self, tool: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": self.type,
            "description": DESCRIPTION,
            "parameters": {
                "type": "object",
                "properties": {
                    "code": {
                        "type": "string",
                        "description": "The Python code to run.",
                    }
                },
                "required": ["code"],
                "additionalProperties": False,
            },
        }

    def initial_details(self, tool: dict[str, Any]) -> dict[str, Any]:
        return {"input": "", "outputs": []}

    def invoke(self, ctx: ToolCallContext, first_marker: int) -> ToolOutcome:
        code = ctx.arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            raise ToolError("Pass the Python code to run as `code`.")
        try:
            manager = session_manager()
        except SandboxUnavailable as exc:
            raise ToolError(
                f"The code interpreter is unavailable on this server: {exc}",
                permanent=True,
            ) from exc
        manager.start_pool()  # once per process; keeps the next start warm
        key = session_key(ctx.project_id, ctx.thread_id)
        try:
            session = manager.session_for(key)
            copied = _copy_inputs(session, ctx)
            result = session.run(
                code, settings.SANDBOX_TIMEOUT_SECONDS, should_stop=ctx.should_stop
            )
        except SandboxUnavailable as exc:
            raise ToolError(
                f"The code interpreter is unavailable on this server: {exc}",
                permanent=True,
            ) from exc
        except (SandboxError, DockerException, RequestException, OSError) as exc:
            # A transient failure of the sandbox or the engine, not the code's.
            logger.warning("code_interpreter %s: %s", key, exc)
            raise ToolError(f"The sandbox failed: {exc}", permanent=False) from exc
        return self._outcome(ctx, session, code, result, copied)

    def _outcome(
        self,
        ctx: ToolCallContext,
        session: Session,
        code: str,
        result: ExecResult,
        copied: list[str],
    ) -> ToolOutcome:
        logs = _logs(result)
        outputs: list[dict[str, Any]] = []
        if logs:
            outputs.append({"type": "logs", "logs": logs})
        files: list[OutputFile] = []
        notes: list[str] = []
        for n, image in enumerate(result.images, start=1):
            created = output_file_create(
                project_id=ctx.project_id, name=f"figure-{n}.png", data=image
            )
            files.append(OutputFile(created.id, f"figure-{n}.png", True))
            outputs.append({"type": "image", "image": {"file_id": created.id}})
        if result.images:
            notes.append(f"{len(result.images)} figure(s) shown to the user.")
        for produced in result.files if not result.session_lost else []:
            if produced.size > session.config.max_file_bytes:
                notes.append(f"{produced.path} is too large to return.")
                continue
            try:
                data = session.get_file(produced.path)
            except SandboxError as exc:
                notes.append(f"{produced.path} could not be returned: {exc}")
                continue
            name = PurePosixPath(produced.path).name
            created = output_file_create(
                project_id=ctx.project_id, name=name, data=data
            )
            is_image = PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES
            files.append(OutputFile(created.id, produced.path, is_image))
            if is_image:
                outputs.append({"type": "image", "image": {"file_id": created.id}})
            notes.append(f"Saved {produced.path} (link it as sandbox:{produced.path}).")
        model_output = logs or "(the code ran and printed nothing)"
        if copied:
            model_output = f"Input files: {', '.join(copied)}\n{model_output}"
        if notes:
            model_output += "\n" + "\n".join(notes)
        return ToolOutcome(
            details={"input": code, "outputs": outputs},
            model_output=model_output,
            files=files,
        )


register(CodeInterpreter())


# -- in the Celery worker: the reaper ----------------------------------------
# A process's warm pool starts with its first code_interpreter call
# (``invoke``), so workers that never run one start no containers. The main
# process of each worker sweeps idle and orphaned containers of every process
# on the host (sandbox/manager.py), from a thread so that a slow or missing
# Docker engine never delays the worker.


def _reap_forever(stop: threading.Event) -> None:
    manager: SessionManager | None = None
    interval = max(5.0, min(60.0, settings.SANDBOX_IDLE_SECONDS / 4))
    warned = False
    while True:
        try:
            if manager is None:
                config = sandbox_config()
                manager = SessionManager(
                    SandboxConfig(**{**vars(config), "pool_size": 0}),
                    docker_client(),
                )
            manager.reap()
        except SandboxUnavailable as exc:
            if not warned:
                logger.warning("code_interpreter calls will fail: %s", exc)
                warned = True
        except Exception:
            logger.exception("code_interpreter: the sandbox reaper failed")
        if stop.wait(interval):
            return


_reaper_stop = threading.Event()


@worker_process_shutdown.connect
def _on_child_stop(**_kwargs: Any) -> None:
    if _manager is not None:
        _manager.shutdown()


@worker_ready.connect
def _on_worker_ready(**_kwargs: Any) -> None:
    threading.Thread(
        target=_reap_forever, args=(_reaper_stop,), name="sandbox-reaper", daemon=True
    ).start()


@worker_shutdown.connect
def _on_worker_stop(**_kwargs: Any) -> None:
    _reaper_stop.set()
