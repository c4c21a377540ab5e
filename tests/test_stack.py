"""`make run` itself: the automation contract, data kept across restarts,
and a clean stop on SIGTERM. Each start brings up its own embedded
PostgreSQL and Redis in a fresh DATA_DIR, exactly as on a new machine."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import openai
import psutil
import pytest

from core.stack.proc import free_port

if TYPE_CHECKING:
    from tests.fake_engine import FakeEngine

pytest_plugins = ["tests.fake_engine"]

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.live


def _start(data_dir: Path, port: int, **extra: str) -> subprocess.Popen[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "BOOTSTRAP_API_KEY",
            "DJANGO_SETTINGS_MODULE",
        }
    }
    env.update({"DATA_DIR": str(data_dir), "PORT": str(port), **extra})
    return subprocess.Popen(
        ["make", "-s", "run"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_ready(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "make run exited early"
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise TimeoutError("make run did not serve the API within 120 s")


def _stop(proc: subprocess.Popen[str], data_dir: Path) -> str:
    """SIGTERM the foreground process group, as a terminal or a supervisor
    does; return everything the launcher printed."""
    family = [
        psutil.Process(proc.pid),
        *psutil.Process(proc.pid).children(recursive=True),
    ]
    assert any("postgres" in " ".join(p.cmdline()) for p in family)
    launcher = next(p for p in family if "core.stack" in " ".join(p.cmdline()))
    os.killpg(proc.pid, signal.SIGTERM)
    # A second SIGTERM mid-shutdown (make forwards its own; supervisors
    # repeat theirs) must not cut the ordered stop short.
    time.sleep(0.001)
    with contextlib.suppress(psutil.NoSuchProcess):
        launcher.send_signal(signal.SIGTERM)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    _gone, alive = psutil.wait_procs(family, timeout=30)
    assert alive == [], f"still running after stop: {alive}"
    # Each child was stopped by the launcher, in order, and PostgreSQL shut
    # down cleanly rather than being killed.
    for line in (
        "stopping web",
        "stopping runs worker",
        "stopping ingestion worker",
        "stopping Redis",
        "stopping PostgreSQL",
    ):
        assert f"[agents] {line}" in output, output
    pg_log = (data_dir / "postgres.log").read_text()
    assert pg_log.rstrip().endswith("database system is shut down"), pg_log[-500:]
    return output


def test_make_run_keeps_the_automation_contract(
    tmp_path: Path, fake_engine: FakeEngine
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()

    first = _start(data_dir, port)
    try:
        _wait_ready(first, port)
    finally:
        output = _stop(first, data_dir)
    printed = re.findall(r"^\s+(sk-\S+)$", output, flags=re.MULTILINE)
    assert len(printed) == 1, output
    generated = printed[0]

    second = _start(
        data_dir,
        port,
        BOOTSTRAP_API_KEY="sk-local-test",
        MODEL_BASE_URL=fake_engine.url,
        DEFAULT_MODEL="contract-engine",
    )
    try:
        _wait_ready(second, port)
        base = f"http://127.0.0.1:{port}/v1"
        # A run end to end on what make run started (the runs worker on
        # threads, woken through the broker list) against MODEL_BASE_URL.
        fake_engine.script({"content": "contract kept"})
        sdk = openai.OpenAI(base_url=base, api_key="sk-local-test", max_retries=0)
        assistant = sdk.beta.assistants.create(model="contract-engine")
        run = sdk.beta.threads.create_and_run_poll(
            assistant_id=assistant.id,
            thread={"messages": [{"role": "user", "content": "hi"}]},
            poll_interval_ms=50,
        )
        assert run.status == "completed", run.last_error
        answer = sdk.beta.threads.messages.list(thread_id=run.thread_id).data[0]
        assert answer.content[0].text.value == "contract kept"
        ok = httpx.get(
            f"{base}/models", headers={"Authorization": "Bearer sk-local-test"}
        )
        assert ok.status_code == 200
        kept = httpx.get(
            f"{base}/assistants", headers={"Authorization": f"Bearer {generated}"}
        )
        assert kept.status_code == 200, "the first start's key survives a restart"
        assert httpx.get(f"{base}/models").status_code == 401
    finally:
        output = _stop(second, data_dir)
    assert generated not in output, "a generated key is printed only once"
    assert (data_dir / "postgres" / "PG_VERSION").exists()


def test_a_killed_launcher_leaves_no_process_behind(tmp_path: Path) -> None:
    """SIGKILL gives the launcher no chance to stop anything: every child
    (PostgreSQL, Redis, the command) must still go, by the parent-death
    signal each was started with."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update({"DATA_DIR": str(tmp_path / "data"), "AGENTS_ENGINE": "off"})
    launcher = subprocess.Popen(
        [sys.executable, "-m", "core.stack", "exec", "--", "sleep", "120"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    children: list[psutil.Process] = []
    while time.monotonic() < deadline:
        children, commands = [], []
        for child in psutil.Process(launcher.pid).children(recursive=True):
            # Short-lived helpers (pg_isready, psql) may be exiting as we look.
            with contextlib.suppress(psutil.NoSuchProcess):  # zombies too
                commands.append(" ".join(child.cmdline()))
                children.append(child)
        names = " ".join(commands)
        if "sleep" in names and "postgres" in names and "redis-server" in names:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the stack did not come up")
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    _gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], f"left behind: {alive}"
