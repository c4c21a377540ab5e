"""Bad input never gets a 500 and never half-writes."""

from __future__ import annotations

import contextlib
import socket
from typing import Any
from urllib.parse import urlparse

import pytest
from django.test import override_settings

from assistants.models import Assistant
from tests.conftest import TEST_MODEL, Tenant


def _read_until_closed(sock: socket.socket) -> bytes:
    """The whole response: the server closes after a 413 (connection: close)."""
    sock.settimeout(10)
    chunks = []
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _post_raw(api: Any, body: bytes, path: str = "/v1/assistants") -> Any:
    return api.generic("POST", path, body, content_type="application/json")


def test_malformed_json_is_a_400(api: Any) -> None:
    response = _post_raw(api, b'{"model": "x",}')
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


def test_a_json_array_body_is_a_400(api: Any) -> None:
    response = _post_raw(api, b"[1, 2]")
    assert response.status_code == 400
    assert (
        response.json()["error"]["message"] == "The request body must be a JSON object."
    )


def test_nan_is_not_json(api: Any) -> None:
    response = _post_raw(
        api, b'{"model": "%s", "temperature": NaN}' % TEST_MODEL.encode()
    )
    assert response.status_code == 400


def test_absurd_nesting_is_a_400_not_a_crash(api: Any) -> None:
    deep = b'{"model": "m", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = _post_raw(api, deep)
    assert response.status_code == 400


def test_a_nul_character_is_a_400_naming_the_field(api: Any, tenant: Tenant) -> None:
    response = _post_raw(
        api, b'{"model": "%s", "name": "a\\u0000b"}' % TEST_MODEL.encode()
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "name"
    assert not Assistant.objects.filter(project=tenant.project).exists()


def test_unicode_edge_cases_round_trip(api: Any) -> None:
    name = "🦜 Ünïcødé \u200b العربية 中文"
    response = api.post(
        "/v1/assistants", {"model": TEST_MODEL, "name": name}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["name"] == name


def test_a_lone_surrogate_is_a_400(api: Any) -> None:
    response = _post_raw(api, b'{"model": "m", "name": "\\ud800"}')
    assert response.status_code == 400


def test_an_oversize_string_names_the_field(api: Any) -> None:
    response = api.post(
        "/v1/assistants", {"model": TEST_MODEL, "name": "x" * 257}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "name"


def test_an_out_of_range_number_names_the_field(api: Any) -> None:
    response = api.post(
        "/v1/assistants", {"model": TEST_MODEL, "temperature": 3}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "temperature"


def test_a_string_for_a_number_is_refused_not_coerced(api: Any) -> None:
    response = api.post(
        "/v1/assistants", {"model": TEST_MODEL, "temperature": "0.5"}, format="json"
    )
    assert response.status_code == 400
    assert "expected a number" in response.json()["error"]["message"]


def test_a_missing_required_field_is_named(api: Any) -> None:
    response = api.post("/v1/assistants", {"name": "no model"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
    assert response.json()["error"]["message"] == "Missing required parameter: 'model'."


def test_an_unknown_id_is_a_404_with_the_openai_body(api: Any) -> None:
    response = api.get("/v1/assistants/asst_nope")
    assert response.status_code == 404
    assert (
        response.json()["error"]["message"] == "No assistant found with id 'asst_nope'."
    )


def test_an_unknown_route_is_a_json_404(api: Any) -> None:
    response = api.get("/v1/no/such/thing")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (GET /v1/no/such/thing)"


def test_a_wrong_method_is_a_405(api: Any) -> None:
    response = api.put("/v1/assistants", {}, format="json")
    assert response.status_code == 405
    assert "error" in response.json()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
def test_an_oversize_json_body_is_a_413(api: Any, tenant: Tenant) -> None:
    body = b'{"model": "%s", "instructions": "%s"}' % (TEST_MODEL.encode(), b"x" * 4096)
    response = _post_raw(api, body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert not Assistant.objects.filter(project=tenant.project).exists()


@pytest.mark.live
def test_the_server_refuses_an_oversize_body_before_reading_it(
    live_server_url: str, live_tenant: Tenant
) -> None:
    """Only headers are sent: the 413 must come back without the body."""
    url = urlparse(live_server_url)
    declared = 50 * 1024 * 1024 * 1024  # 50 GB, never sent
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            (
                f"POST /v1/assistants HTTP/1.1\r\nHost: {url.hostname}\r\n"
                f"Authorization: Bearer {live_tenant.raw_key}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {declared}\r\n\r\n"
            ).encode()
        )
        reply = _read_until_closed(sock).decode()
    assert reply.startswith("HTTP/1.1 413")
    assert "payload_too_large" in reply


@pytest.mark.live
def test_a_chunked_body_over_the_limit_is_cut_off(
    live_server_url: str, live_tenant: Tenant
) -> None:
    url = urlparse(live_server_url)
    chunk = b"x" * (1024 * 1024)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /v1/assistants HTTP/1.1\r\nHost: {url.hostname}\r\n"
                f"Authorization: Bearer {live_tenant.raw_key}\r\n"
                "Content-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        reply = b""
        try:
            for _ in range(64):  # up to 64 MB, far past the JSON limit
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server may close the connection once it has answered
        sock.settimeout(10)
        with contextlib.suppress(OSError):
            reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413")
