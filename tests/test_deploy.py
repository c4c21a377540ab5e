"""Deployment material (deploy/): production settings, compose, Helm, images.

The compose test builds the image (``deploy/build.py``, skipped when the
image of the same inputs exists), brings the non-GPU stack up for real with
PostgreSQL and Redis from the image itself (``compose.local.yaml``) and the
scripted engine in a container, runs an assistant through the API and tears
everything down. Without Docker or docker-compose these tests skip, except
under ``AGENTS_REQUIRE_REAL_SERVICES=1`` (CI), where they fail.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "agents"
# The Kubernetes version the rendered chart is validated against (the
# schemas ship inside kubernetes-validate; no network).
KUBERNETES_VERSION = "1.33.0"
REQUIRE_REAL = os.environ.get("AGENTS_REQUIRE_REAL_SERVICES") == "1"


def _missing(reason: str) -> None:
    if REQUIRE_REAL:
        pytest.fail(f"{reason} (AGENTS_REQUIRE_REAL_SERVICES=1)")
    pytest.skip(reason)


def _strong_key() -> str:
    return secrets.token_urlsafe(50)


def _manage(
    *args: str, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _production_env(**overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECURE_", "SESSION_", "CSRF_", "SECRET_KEY"))
    }
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.production"
    env.update(overrides)
    return env


# --- production settings ----------------------------------------------------


def test_production_settings_pass_check_deploy_with_a_real_secret_key() -> None:
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env=_production_env(SECRET_KEY=_strong_key()),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_refuse_the_development_key() -> None:
    for key in ("", "insecure-dev-key-change-me", "short-key"):
        result = _manage("check", env=_production_env(SECRET_KEY=key))
        assert result.returncode != 0
        assert "needs SECRET_KEY" in result.stderr


def test_production_security_settings_come_from_the_environment() -> None:
    script = (
        "import json; from django.conf import settings as s; print(json.dumps("
        "[s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, "
        "s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD, "
        "s.SECURE_PROXY_SSL_HEADER, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE,"
        " s.DEBUG]))"
    )
    defaults = _manage(
        "shell", "-c", script, env=_production_env(SECRET_KEY=_strong_key())
    )
    assert defaults.returncode == 0, defaults.stderr
    assert json.loads(defaults.stdout.strip().splitlines()[-1]) == [
        True,
        31536000,
        True,
        False,
        ["HTTP_X_FORWARDED_PROTO", "https"],
        True,
        True,
        False,
    ]
    changed = _manage(
        "shell",
        "-c",
        script,
        env=_production_env(
            SECRET_KEY=_strong_key(),
            SECURE_SSL_REDIRECT="false",
            SECURE_HSTS_SECONDS="0",
            SECURE_HSTS_INCLUDE_SUBDOMAINS="false",
            SECURE_HSTS_PRELOAD="true",
            SECURE_PROXY_SSL_HEADER="",
            SESSION_COOKIE_SECURE="false",
            CSRF_COOKIE_SECURE="false",
            DEBUG="true",
        ),
    )
    assert changed.returncode == 0, changed.stderr
    # DEBUG stays off in production whatever the environment says.
    assert json.loads(changed.stdout.strip().splitlines()[-1]) == [
        False,
        0,
        False,
        True,
        None,
        False,
        False,
        False,
    ]


# --- compose ------------------------------------------------------------------


def _compose_binary() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, check=False
    )
    if shutil.which("docker") and probe.returncode == 0:
        return ["docker", "compose"]
    _missing("neither docker-compose nor the docker compose plugin is installed")
    raise AssertionError("unreachable")


def _env_file(path: Path, **values: str) -> Path:
    lines = [
        line
        for line in (DEPLOY / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    settings = dict(line.split("=", 1) for line in lines)
    settings.update(values)
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    return path


def _compose_config(
    files: list[str], env: dict[str, str], *extra: str
) -> dict[str, Any]:
    result = subprocess.run(
        [*_compose_binary(), *sum((["-f", str(DEPLOY / f)] for f in files), [])]
        + [*extra, "config"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_compose_file_is_valid_with_every_service_health_checked(
    tmp_path: Path,
) -> None:
    env_file = _env_file(tmp_path / "agents.env", POSTGRES_PASSWORD="from-the-env-file")
    env = {"AGENTS_ENV_FILE": str(env_file)}
    config = _compose_config(["compose.yaml"], env, "--profile", "gpu")
    services = config["services"]
    assert set(services) == {
        "postgres",
        "redis",
        "migrate",
        "web",
        "worker-runs",
        "worker-ingestion",
        "beat",
        "vllm",
    }
    for name, service in services.items():
        if name != "migrate":  # a one-shot job: its exit code is its health
            assert service.get("healthcheck", {}).get("test"), name
    assert services["vllm"]["profiles"] == ["gpu"]
    gpu = services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    for name in ("web", "worker-runs", "worker-ingestion", "beat"):
        service = services[name]
        assert service["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        # Secrets come from the env file (inlined by `config`).
        assert service["environment"]["POSTGRES_PASSWORD"] == "from-the-env-file"
    # ... and the compose file itself names none (comments aside).
    raw = "\n".join(
        line.partition("#")[0]
        for line in (DEPLOY / "compose.yaml").read_text().splitlines()
    )
    for secret in ("SECRET_KEY", "PASSWORD", "API_KEY", "TOKEN"):
        assert secret not in raw
    # The web port is published on loopback unless the operator says so.
    published = json.dumps(services["web"]["ports"])
    assert "127.0.0.1" in published
    # Only vLLM is in a profile: a plain `up` starts everything else.
    assert [n for n, svc in services.items() if svc.get("profiles")] == ["vllm"]
    plain = _compose_config(["compose.yaml"], env)
    # No service gets the Docker socket by default; with the socket override,
    # only the runs worker does.
    assert "docker.sock" not in json.dumps(plain)
    socket_config = _compose_config(
        ["compose.yaml", "compose.sandbox-socket.yaml"], env
    )
    holders = [
        name
        for name, service in socket_config["services"].items()
        if "docker.sock" in json.dumps(service.get("volumes", []))
    ]
    assert holders == ["worker-runs"]
    tls = _compose_config(
        ["compose.yaml", "compose.sandbox-tls.yaml"],
        {
            **env,
            "SANDBOX_DOCKER_HOST": "tcp://sandbox.internal:2376",
            "DOCKER_CERT_DIR": str(tmp_path),
        },
    )
    runs_env = tls["services"]["worker-runs"]["environment"]
    assert runs_env["DOCKER_HOST"] == "tcp://sandbox.internal:2376"
    assert runs_env["DOCKER_TLS_VERIFY"] == "1"
    local = _compose_config(["compose.yaml", "compose.local.yaml"], env)
    for name in ("postgres", "redis"):
        assert local["services"][name]["image"] == "agents:latest"


# --- Helm -----------------------------------------------------------------------


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    helm = pytest.importorskip("helm_python")
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="prod", namespace="agents")
    documents: list[dict[str, Any]] = []
    for name, text in sorted(rendered.items()):
        if name.endswith("NOTES.txt"):
            continue
        documents += [doc for doc in yaml.safe_load_all(text) if doc]
    return documents


def _validate(documents: list[dict[str, Any]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for document in documents:
        # strict: unknown fields are errors too.
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def _find(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for document in documents:
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise AssertionError(f"no {kind} {name} in {[d['metadata'] for d in documents]}")


def _container(document: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = document["spec"]["template"]["spec"]["containers"][0]
    return container


def test_helm_chart_renders_valid_kubernetes_objects_with_defaults() -> None:
    documents = _render({"existingSecret": "agents-env"})
    _validate(documents)
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in documents)
    assert kinds == [
        "Deployment/prod-agents-beat",
        "Deployment/prod-agents-web",
        "Deployment/prod-agents-worker-ingestion",
        "Deployment/prod-agents-worker-runs",
        "HorizontalPodAutoscaler/prod-agents-web",
        "HorizontalPodAutoscaler/prod-agents-worker-runs",
        "Job/prod-agents-migrate",
        "PersistentVolumeClaim/prod-agents-files",
        "PodDisruptionBudget/prod-agents-web",
        "Service/prod-agents-web",
    ]
    web = _find(documents, "Deployment", "prod-agents-web")
    container = _container(web)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["envFrom"] == [{"secretRef": {"name": "agents-env"}}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert web["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    assert "replicas" not in web["spec"]  # the HPA owns it
    # Empty settings are left out, so the Secret's values are not hidden.
    names = [entry["name"] for entry in container["env"]]
    assert "MODEL_BASE_URL" not in names
    beat = _find(documents, "Deployment", "prod-agents-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    job = _find(documents, "Job", "prod-agents-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == ("pre-install,pre-upgrade")
    assert _container(job)["args"] == ["migrate"]
    runs = _find(documents, "Deployment", "prod-agents-worker-runs")
    assert _container(runs)["args"] == ["worker-runs"]
    assert _container(runs)["livenessProbe"]["exec"]["command"][-2:] == [
        "worker",
        "runs",
    ]
    hpa = _find(documents, "HorizontalPodAutoscaler", "prod-agents-worker-runs")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "prod-agents-worker-runs"


def test_helm_chart_optional_parts_render_valid_objects() -> None:
    documents = _render(
        {
            "existingSecret": "agents-env",
            "vllm": {"enabled": True, "gpus": 2},
            "postgresql": {"enabled": True},
            "redis": {"enabled": True},
            "web": {"ingress": {"enabled": True, "tlsSecretName": "tls"}},
            "sandbox": {"dockerHost": "tcp://sandbox:2376", "tlsSecret": "dtls"},
        }
    )
    _validate(documents)
    vllm = _container(_find(documents, "Deployment", "prod-agents-vllm"))
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert "--enable-auto-tool-choice" in vllm["args"]
    web_env = {
        entry["name"]: entry.get("value")
        for entry in _container(_find(documents, "Deployment", "prod-agents-web"))[
            "env"
        ]
    }
    # The bundled vLLM becomes the engine when MODEL_BASE_URL is unset.
    assert web_env["MODEL_BASE_URL"] == "http://prod-agents-vllm:8000/v1"
    assert web_env["DOCKER_HOST"] == "tcp://sandbox:2376"
    assert web_env["DOCKER_TLS_VERIFY"] == "1"
    _find(documents, "StatefulSet", "prod-agents-postgresql")
    _find(documents, "Deployment", "prod-agents-redis")
    _find(documents, "Ingress", "prod-agents")
    # existingSecret given: the chart makes no Secret of its own.
    assert not [d for d in documents if d["kind"] == "Secret"]


def test_helm_chart_without_a_secret_is_refused_or_made_from_values() -> None:
    helm = pytest.importorskip("helm_python")
    with pytest.raises(helm.HelmError, match="existingSecret"):
        _render({})
    documents = _render(
        {
            "secrets": {
                "SECRET_KEY": "x" * 50,
                "DATABASE_URL": "postgres://a:b@db/agents",
                "REDIS_URL": "redis://redis:6379/0",
            }
        }
    )
    _validate(documents)
    secret = _find(documents, "Secret", "prod-agents-env")
    assert secret["stringData"]["REDIS_URL"] == "redis://redis:6379/0"


# --- the images and the stack, for real ------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# The scripted engine (tests/fake_engine.py) inside a container of the
# stack: the image has no pytest (a test-only dependency the module only
# uses for its fixtures), and the engine must listen on the compose network.
ENGINE_SCRIPT = """
import sys, types
stub = types.ModuleType("pytest")
def fixture(*args, **kwargs):
    if args and callable(args[0]) and not kwargs:
        return args[0]
    return lambda function: function
stub.fixture = fixture
sys.modules["pytest"] = stub
sys.path.insert(0, "/app")
from http.server import ThreadingHTTPServer
import tests.fake_engine as fake
def bind_all(self, port, state):
    ThreadingHTTPServer.__init__(self, ("0.0.0.0", port), fake._Handler)
    self.state = state
fake._Server.__init__ = bind_all
fake.serve(8000, 8001)
"""


class Stack:
    def __init__(self, tmp_path: Path, *, image: str) -> None:
        self.project = f"agents-deploy-test-{os.getpid()}"
        self.tmp = tmp_path
        self.api_port = _free_port()
        self.engine_port = _free_port()
        self.api_key = "sk-deploy-" + secrets.token_hex(16)
        password = secrets.token_hex(16)
        self.env_file = _env_file(
            tmp_path / "agents.env",
            SECRET_KEY=_strong_key(),
            POSTGRES_PASSWORD=password,
            DATABASE_URL=f"postgres://agents:{password}@postgres:5432/agents",
            MODEL_BASE_URL="http://engine:8000/v1",
            DEFAULT_MODEL="fake-model",
            MODEL_CONTEXT_WINDOW="8192",
            MODEL_API_KEY="",
            VLLM_API_KEY="",
            BOOTSTRAP_API_KEY=self.api_key,
            WEB_CONCURRENCY="1",
            WORKER_CONCURRENCY="1",
            SANDBOX_POOL_SIZE="0",
        )
        (tmp_path / "engine.py").write_text(ENGINE_SCRIPT)
        # The containers run as uid 10001: the mounted directory must be
        # readable by it (pytest makes it 0700).
        tmp_path.chmod(0o755)
        (tmp_path / "engine.py").chmod(0o644)
        override = {
            "services": {
                "engine": {
                    "image": "${AGENTS_IMAGE:-agents:latest}",
                    "entrypoint": ["python", "/engine/engine.py"],
                    "volumes": [
                        f"{ROOT / 'tests'}:/app/tests:ro",
                        f"{tmp_path}:/engine:ro",
                    ],
                    "ports": [f"127.0.0.1:{self.engine_port}:8000"],
                    "healthcheck": {
                        "test": [
                            "CMD",
                            "python",
                            "-c",
                            "import urllib.request; urllib.request.urlopen("
                            "'http://127.0.0.1:8000/v1/models', timeout=3)",
                        ],
                        "interval": "2s",
                        "retries": 30,
                    },
                },
                "migrate": {"depends_on": {"engine": {"condition": "service_healthy"}}},
            }
        }
        (tmp_path / "compose.test.yaml").write_text(yaml.safe_dump(override))
        self.env = {
            **os.environ,
            "AGENTS_ENV_FILE": str(self.env_file),
            "AGENTS_PORT": str(self.api_port),
            "AGENTS_IMAGE": image,
        }

    def compose(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run(
            [
                *_compose_binary(),
                "-p",
                self.project,
                "-f",
                str(DEPLOY / "compose.yaml"),
                "-f",
                str(DEPLOY / "compose.local.yaml"),
                "-f",
                str(self.tmp / "compose.test.yaml"),
                *args,
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"compose {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def health(self) -> dict[str, str]:
        """Each container's service name → health (or state)."""
        ids = self.compose("ps", "-q", timeout=60).split()
        if not ids:
            return {}
        inspected = json.loads(
            subprocess.run(
                ["docker", "inspect", *ids],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )
        states: dict[str, str] = {}
        for item in inspected:
            service = item["Config"]["Labels"]["com.docker.compose.service"]
            state = item["State"]
            health = state.get("Health", {}).get("Status")
            if state["Status"] == "exited":
                states[service] = f"exited {state['ExitCode']}"
            else:
                states[service] = health or state["Status"]
        return states


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    if shutil.which("docker") is None:
        _missing("docker CLI is not installed")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        _missing("no Docker engine answers")
    _compose_binary()
    # Builds agents:<hash> unless it exists (then a second or so).
    built = subprocess.run(
        [sys.executable, str(DEPLOY / "build.py")],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # The exact tag, not agents:latest, which a concurrent build may move.
    image = built.stdout.strip().splitlines()[-1]
    assert image.startswith("agents:"), built.stdout[-2000:]
    running = Stack(tmp_path, image=image)
    try:
        yield running
    finally:
        try:
            if os.environ.get("AGENTS_DEPLOY_TEST_LOGS") == "1":
                print(running.compose("logs", "--no-color", "--tail", "80"))
        finally:
            running.compose("down", "-v", "--remove-orphans", "--timeout", "20")


SERVICES = {"postgres", "redis", "engine", "web", "worker-runs", "worker-ingestion"}


@pytest.mark.timeout(1800)
def test_compose_stack_comes_up_healthy_and_completes_a_run(stack: Stack) -> None:
    stack.compose("up", "-d", timeout=900)
    deadline = time.monotonic() + 600
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = stack.health()
        if (
            states.get("migrate", "").startswith("exited")
            and states["migrate"] != "exited 0"
        ):
            break
        if all(states.get(name) == "healthy" for name in [*SERVICES, "beat"]):
            break
        time.sleep(3)
    if not all(states.get(name) == "healthy" for name in [*SERVICES, "beat"]):
        logs = stack.compose("logs", "--no-color", "--tail", "60")
        raise AssertionError(f"stack not healthy: {states}\n{logs[-12000:]}")
    assert states["migrate"] == "exited 0"

    base = f"http://127.0.0.1:{stack.api_port}"
    # Production settings: plain HTTP is redirected to HTTPS, except probes;
    # behind the proxy (X-Forwarded-Proto: https) the API answers.
    with httpx.Client(base_url=base, timeout=30) as plain:
        assert plain.get("/v1/models").status_code == 301
        assert plain.get("/healthz").status_code == 200
        # Ready (the health check saw it); a check may time out on a busy
        # host, so a probe retries as an orchestrator would.
        ready = plain.get("/readyz")
        for _ in range(30):
            if ready.status_code == 200:
                break
            time.sleep(2)
            ready = plain.get("/readyz")
        assert ready.json()["status"] == "ok", ready.text
    headers = {
        "Authorization": f"Bearer {stack.api_key}",
        "OpenAI-Beta": "assistants=v2",
        "X-Forwarded-Proto": "https",
    }
    with httpx.Client(base_url=base, headers=headers, timeout=30) as api:
        assistant = api.post(
            "/v1/assistants",
            json={"model": "fake-model", "instructions": "Be brief."},
        )
        assert assistant.status_code == 200, assistant.text
        thread = api.post(
            "/v1/threads",
            json={"messages": [{"role": "user", "content": "Hello?"}]},
        )
        assert thread.status_code == 200, thread.text
        thread_id = thread.json()["id"]
        run = api.post(
            f"/v1/threads/{thread_id}/runs",
            json={"assistant_id": assistant.json()["id"]},
        )
        assert run.status_code == 200, run.text
        run_id = run.json()["id"]
        status = run.json()["status"]
        deadline = time.monotonic() + 120
        while status in {"queued", "in_progress"} and time.monotonic() < deadline:
            time.sleep(0.5)
            status = api.get(f"/v1/threads/{thread_id}/runs/{run_id}").json()["status"]
        assert status == "completed", api.get(
            f"/v1/threads/{thread_id}/runs/{run_id}"
        ).json()
        messages = api.get(f"/v1/threads/{thread_id}/messages").json()["data"]
        answer = messages[0]
        assert answer["role"] == "assistant"
        assert answer["content"][0]["text"]["value"] == "Hello from the fake engine."
    # The worker container called the engine over the compose network.
    recorded = httpx.get(
        f"http://127.0.0.1:{stack.engine_port}/__requests", timeout=10
    ).json()
    assert any("Hello?" in json.dumps(r.get("messages")) for r in recorded), recorded
