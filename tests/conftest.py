"""Shared fixtures: tenants, API clients, and the real server in a subprocess.

The live server is uvicorn serving ``config.asgi`` against pytest-django's
test database, exactly as ``make run`` serves it. Tests that use it create
their own project and key (``tenant``), so they never see each other's data
and need no cleanup: the test database is dropped at the end of the session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import openai
import orjson
import pytest
from django.db import connection

from core.models import ApiKey, LanguageModel, Organization, Project
from core.services.keys import api_key_create
from core.services.models import language_model_register
from core.stack.commands import web_command, worker_command
from core.stack.proc import free_port, stop_process

BASE_DIR = Path(__file__).resolve().parent.parent
TEST_MODEL = "test-model"
# The function tool the run and engine tests call (strict, one argument).
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


@dataclass
class Tenant:
    organization: Organization
    project: Project
    key: ApiKey
    raw_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.raw_key}",
            "OpenAI-Beta": "assistants=v2",
        }


_counter = 0


def make_tenant(organization: Organization | None = None) -> Tenant:
    global _counter
    _counter += 1
    stamp = f"{os.getpid()}-{time.monotonic_ns()}-{_counter}"
    org = organization or Organization.objects.create(name=f"org {stamp}")
    project = Project.objects.create(organization=org, name=f"project {stamp}")
    issued = api_key_create(project=project, name="test")
    return Tenant(
        organization=org, project=project, key=issued.api_key, raw_key=issued.raw
    )


def ensure_test_model() -> LanguageModel:
    return language_model_register(
        name=TEST_MODEL, base_urls=["http://127.0.0.1:9/v1"], context_window=8192
    )


def _database_url() -> str:
    s = connection.settings_dict
    host = quote(s.get("HOST") or "", safe="")
    password = f":{quote(s['PASSWORD'], safe='')}" if s.get("PASSWORD") else ""
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{s['USER']}{password}@{host}{port}/{s['NAME']}"


@pytest.fixture(scope="session")
def django_db_setup(
    request: pytest.FixtureRequest,
    django_test_environment: None,
    django_db_blocker: Any,
    django_db_modify_db_settings: None,
) -> Iterator[None]:
    """Always create the test database.

    pytest-django creates it only when some collected test asks for ``db``;
    a session of live tests alone would otherwise run the live server and
    worker against the real database named by DATABASE_URL.
    """
    from django.test.utils import setup_databases, teardown_databases

    verbosity = request.config.option.verbose
    with django_db_blocker.unblock():
        config = setup_databases(
            verbosity=verbosity,
            interactive=False,
            # Django iterates any collection; its stubs ask for a Mapping.
            aliases={"default"},  # type: ignore[arg-type]
        )
    yield
    with django_db_blocker.unblock():
        teardown_databases(config, verbosity=verbosity)


@pytest.fixture(scope="session")
def live_server_url(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT/v1``) of a real uvicorn process."""
    with django_db_blocker.unblock():
        database_url = _database_url()
        connection.close()
    assert connection.settings_dict["NAME"].startswith("test_"), (
        "the live server must run on the test database"
    )
    data_dir = Path(os.environ.get("DATA_DIR", BASE_DIR / ".data"))
    data_dir.mkdir(parents=True, exist_ok=True)
    with serve_web(
        "the live server", live_env(database_url), data_dir / "live-server.log"
    ) as url:
        yield f"{url}/v1"


@contextmanager
def serve_web(
    name: str,
    env: dict[str, str],
    log_path: Path,
    *,
    access_log: bool = False,
    extra: Sequence[str] = (),
) -> Iterator[str]:
    """A uvicorn process of the platform on a free loopback port, answering
    ``/healthz``; yields its base URL and stops it afterwards."""
    port = free_port()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            web_command(port, access_log=access_log, extra=extra),
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited; see {log_path}")
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise
                time.sleep(0.1)
        try:
            yield url
        finally:
            stop_process(proc, name, timeout=15)


# Fast clocks for the run machinery, shared by the live server and worker.
LIVE_RUN_SETTINGS = {
    "RUN_HEARTBEAT_SECONDS": "0.5",
    "RUN_HEARTBEAT_TIMEOUT_SECONDS": "3",
    "REAPER_INTERVAL_SECONDS": "0.5",
    "RUN_REQUEUE_AFTER_SECONDS": "5",
}


def live_env(database_url: str) -> dict[str, str]:
    """The environment of the live server and worker: the test database, and
    one storage directory so tests can see the files the server wrote."""
    from django.conf import settings

    return {
        **os.environ,
        **LIVE_RUN_SETTINGS,
        "DATABASE_URL": database_url,
        "FILES_DIR": str(settings.MEDIA_ROOT),
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "LOG_LEVEL": "WARNING",
    }


@pytest.fixture(scope="session")
def live_worker(
    live_server_url: str, django_db_blocker: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker (prefork, 2 processes) on the test database."""
    with django_db_blocker.unblock():
        database_url = _database_url()
    data_dir = Path(os.environ.get("DATA_DIR", BASE_DIR / ".data"))
    log_path = data_dir / "live-worker.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    log = open(log_path, "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        worker_command(concurrency=2, hostname=f"test-{os.getpid()}@%h"),
        cwd=BASE_DIR,
        env=live_env(database_url),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while b" ready." not in log_path.read_bytes()[start:]:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the worker did not start; see {log_path}")
        time.sleep(0.2)
    yield proc
    stop_process(proc, "the live worker", timeout=20)
    log.close()


@pytest.fixture
def live_tenant(live_server_url: str, django_db_blocker: Any) -> Tenant:
    """A committed project and key the live server can see."""
    with django_db_blocker.unblock():
        ensure_test_model()
        return make_tenant()


@pytest.fixture
def other_live_tenant(live_server_url: str, django_db_blocker: Any) -> Tenant:
    with django_db_blocker.unblock():
        return make_tenant()


@pytest.fixture
def sdk(live_server_url: str, live_tenant: Tenant) -> Any:
    """The official openai SDK, pointed at the live server."""
    import openai

    return openai.OpenAI(
        base_url=live_server_url, api_key=live_tenant.raw_key, max_retries=0, timeout=30
    )


@pytest.fixture
def http(live_server_url: str, live_tenant: Tenant) -> Iterator[httpx.Client]:
    """Raw HTTP to the live server, authenticated as ``live_tenant``."""
    with httpx.Client(
        base_url=live_server_url, headers=live_tenant.headers, timeout=30
    ) as client:
        yield client


# In-process (Django test client) fixtures: fast, rolled back after each test.


@pytest.fixture
def tenant(db: Any) -> Tenant:
    ensure_test_model()
    return make_tenant()


@pytest.fixture
def api(tenant: Tenant) -> Any:
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.raw_key}")
    return client


# Helpers shared by the API tests.


def sdk_for(live_server_url: str, tenant: Tenant) -> openai.OpenAI:
    """The official SDK authenticated as ``tenant``."""
    return openai.OpenAI(
        base_url=live_server_url, api_key=tenant.raw_key, max_retries=0, timeout=30
    )


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    """The ``error`` object of an SDK exception (the SDK unwraps it)."""
    body = exc.body
    assert isinstance(body, dict)
    return body


def texts(messages: Any) -> list[str]:
    """The first text part of each message."""
    return [m.content[0].text.value for m in messages]


def make_file(
    tenant: Tenant, django_db_blocker: Any, name: str, purpose: str = "assistants"
) -> str:
    """A committed file row of ``tenant`` (no blob: for id checks only)."""
    from tools.models import File

    with django_db_blocker.unblock():
        file = File.objects.create(
            project=tenant.project,
            filename=name,
            purpose=purpose,
            bytes=3,
            content=f"files/{tenant.project.id}/{name}",
        )
    return file.id


@pytest.fixture
def other_sdk(live_server_url: str, other_live_tenant: Tenant) -> openai.OpenAI:
    """The SDK as another project: it must see none of ``sdk``'s objects."""
    return sdk_for(live_server_url, other_live_tenant)


def send_headers_only(
    live_server_url: str, path: str, raw_key: str, content_length: int
) -> tuple[int, dict[str, Any]]:
    """POST only the request head, announcing ``content_length`` body bytes
    that are never sent, and return the (status, JSON body) the server
    answers with. A reply at all proves it was given before the body."""
    url = urlsplit(live_server_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    head = (
        f"POST {url.path}{path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"Authorization: Bearer {raw_key}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head.encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection without answering"
            received += chunk
        header_block, _, body = received.partition(b"\r\n\r\n")
        lines = header_block.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, orjson.loads(body)


def admin_url(app_model: str, pk: str, action: str = "change") -> str:
    """An admin object URL as the admin itself builds it: primary keys are
    quoted there, and unquoting reads ``_XX`` as a hex escape, so a raw
    ``thread_3Fab…`` would name another object."""
    from django.contrib.admin.utils import quote
    from django.urls import reverse

    app, model = app_model.split(".")
    return reverse(f"admin:{app}_{model}_{action}", args=[quote(pk)])
