"""The sandbox library (sandbox/) against the real Docker engine and image:
sessions, files, charts, time limits, the pool, the reaper, and an attack
suite in which every program must be contained with the host unaffected.

Needs a Docker engine and the image (``make sandbox-image``); skipped without
them, failed instead when AGENTS_REQUIRE_REAL_SERVICES=1 (CI).
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from sandbox import (
    SandboxConfig,
    SandboxUnavailable,
    Session,
    SessionManager,
    docker_client,
)
from sandbox.session import container_kwargs

BASE_DIR = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("SANDBOX_IMAGE", "agents-sandbox:latest")
# Set in this (host) process before any container starts: it must never be
# visible inside one.
HOST_SECRET = f"host-secret-{uuid.uuid4().hex}"
os.environ["AGENTS_TEST_HOST_SECRET"] = HOST_SECRET


def _unavailable(message: str) -> None:
    if os.environ.get("AGENTS_REQUIRE_REAL_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    try:
        client = docker_client()
    except SandboxUnavailable as exc:
        _unavailable(str(exc))
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        _unavailable(f"the sandbox image {IMAGE} is missing: make sandbox-image")
    return client


def _config(tmp: Path, **overrides: object) -> SandboxConfig:
    values: dict[str, object] = {
        "image": IMAGE,
        "memory_mb": 256,
        "pids": 64,
        "tmp_mb": 16,
        "data_mb": 32,
        "timeout_seconds": 10,
        "idle_seconds": 300,
        "pool_size": 0,
        "output_cap": 16 * 1024,
        "state_dir": str(tmp / "state"),
        "name_prefix": f"agents-sbx-test{os.getpid()}",
    }
    values.update(overrides)
    return SandboxConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def manager(
    client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SessionManager]:
    manager = SessionManager(_config(tmp_path_factory.mktemp("sandbox")), client)
    yield manager
    _remove_all(client, manager.config.name_prefix)


def _remove_all(client: docker.DockerClient, prefix: str) -> None:
    for container in client.containers.list(all=True, filters={"name": prefix}):
        container.remove(force=True)


@pytest.fixture
def session(manager: SessionManager) -> Iterator[Session]:
    key = f"test:{uuid.uuid4().hex}"
    yield manager.session_for(key)
    manager.close(key)


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("host") / "sentinel.txt"
    path.write_text("untouched")
    return path


def assert_host_unaffected(
    client: docker.DockerClient, manager: SessionManager, sentinel: Path
) -> None:
    """The engine answers, the host can start processes, a host file is
    intact, and a fresh session works."""
    assert client.ping()
    assert subprocess.run(["true"], check=False).returncode == 0
    assert sentinel.read_text() == "untouched"
    key = f"check:{uuid.uuid4().hex}"
    try:
        assert manager.session_for(key).run("print(6 * 7)").stdout == "42\n"
    finally:
        manager.close(key)


# -- sessions ---------------------------------------------------------------


def test_state_persists_across_calls_in_a_session_and_not_across_keys(
    manager: SessionManager,
) -> None:
    one, two = f"p1:{uuid.uuid4().hex}", f"p1:{uuid.uuid4().hex}"
    try:
        first = manager.session_for(one)
        assert first.run("secret = 41").ok
        assert manager.session_for(one).run("print(secret + 1)").stdout == "42\n"
        other = manager.session_for(two)
        assert other.id != first.id
        result = other.run("print(secret)")
        assert result.error_name == "NameError"
        assert "secret" in (result.error or "")
    finally:
        manager.close(one)
        manager.close(two)


def test_another_process_manager_adopts_the_keys_container(
    manager: SessionManager, client: docker.DockerClient
) -> None:
    key = f"p2:{uuid.uuid4().hex}"
    try:
        manager.session_for(key).run("shared = 'kept'")
        # A second manager stands in for another worker process.
        other = SessionManager(manager.config, client)
        session = other.session_for(key)
        assert session.id == manager.session_for(key).id
        assert session.run("print(shared)").stdout == "kept\n"
    finally:
        manager.close(key)


def test_files_go_in_and_come_out(session: Session) -> None:
    path = session.put_file("data.csv", b"x,y\n1,2\n3,4\n")
    assert path == "/mnt/data/data.csv"
    result = session.run(
        "import pandas as pd\n"
        "df = pd.read_csv('/mnt/data/data.csv')\n"
        "df['z'] = df.x + df.y\n"
        "df.to_csv('/mnt/data/out.csv', index=False)\n"
        "print(df.z.sum())"
    )
    assert result.ok, result.error
    assert result.stdout == "10\n"
    # The input is not an output; the new file is.
    assert [f.path for f in result.files] == ["/mnt/data/out.csv"]
    assert session.get_file("/mnt/data/out.csv") == b"x,y,z\n1,2,3\n3,4,7\n"


def test_a_matplotlib_chart_comes_back_as_an_image(session: Session) -> None:
    result = session.run(
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [1, 4, 9])\n"
        "plt.title('squares')\n"
        "plt.show()\n"
        "plt.figure(); plt.bar(['a', 'b'], [1, 2])\n"  # left open: returned too
        "plt.savefig('/mnt/data/bars.png')"
    )
    assert result.ok, result.error
    assert len(result.images) == 2
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in result.images)
    assert [f.path for f in result.files] == ["/mnt/data/bars.png"]
    assert session.get_file("bars.png").startswith(b"\x89PNG")


def test_an_error_returns_its_traceback_and_the_session_goes_on(
    session: Session,
) -> None:
    result = session.run("value = 7\n1 / 0")
    assert result.error_name == "ZeroDivisionError"
    assert "Traceback" in (result.error or "")
    assert "kernel.py" not in (result.error or "")
    assert session.run("import sys; sys.exit(3)").error_name == "SystemExit"
    assert session.run("print(value)").stdout == "7\n"


def test_a_timeout_interrupts_the_code_and_keeps_the_state(session: Session) -> None:
    session.run("kept = 'yes'")
    started = time.monotonic()
    result = session.run("while True:\n    pass", timeout=1)
    assert time.monotonic() - started < 5
    assert result.timed_out
    assert not result.session_lost
    assert "timed out" in (result.error or "")
    assert session.run("print(kept)").stdout == "yes\n"


def test_code_that_ignores_the_interrupt_is_killed_and_says_the_state_is_lost(
    manager: SessionManager,
) -> None:
    key = f"p3:{uuid.uuid4().hex}"
    try:
        session = manager.session_for(key)
        result = session.run(
            "import time\n"
            "while True:\n"
            "    try:\n"
            "        time.sleep(0.05)\n"
            "    except BaseException:\n"
            "        pass",
            timeout=1,
        )
        assert result.timed_out and result.session_lost
        assert "lost" in (result.error or "")
        assert session.dead
        fresh = manager.session_for(key)
        assert fresh.id != session.id
        assert fresh.run("print('again')").stdout == "again\n"
    finally:
        manager.close(key)


def test_a_cancelled_call_is_interrupted_and_the_session_kept(
    session: Session,
) -> None:
    # A stray interrupt while idle does not end the kernel.
    session.container.kill(signal="SIGINT")
    assert session.run("print('idle ok')").stdout == "idle ok\n"
    started = time.monotonic()
    result = session.run(
        "import time\nn = 0\nwhile True:\n    n += 1\n    time.sleep(0.01)",
        timeout=30,
        should_stop=lambda: time.monotonic() - started > 0.5,
    )
    assert time.monotonic() - started < 5
    assert result.error_name == "KeyboardInterrupt"
    assert not result.session_lost
    assert session.run("print(n > 0)").stdout == "True\n"


def test_sessions_in_parallel_each_get_their_own_output(
    manager: SessionManager,
) -> None:
    keys = [f"par:{uuid.uuid4().hex}" for _ in range(6)]

    def work(n: int) -> list[str]:
        session = manager.session_for(keys[n])
        return [
            session.run(f"import time\ntime.sleep(0.06)\nprint({n}, {i})").stdout
            for i in range(4)
        ]

    try:
        with concurrent.futures.ThreadPoolExecutor(len(keys)) as pool:
            outputs = list(pool.map(work, range(len(keys))))
        assert outputs == [[f"{n} {i}\n" for i in range(4)] for n in range(len(keys))]
    finally:
        for key in keys:
            manager.close(key)


def test_output_is_capped(session: Session) -> None:
    result = session.run(
        "print('x' * 1_000_000)\nimport os; os.system('yes | head -c 500000')"
    )
    assert len(result.stdout) < 17 * 1024
    assert "[output truncated" in result.stdout


# -- the pool and the reaper -------------------------------------------------


def test_the_pool_serves_first_calls_and_never_shares_a_container(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    pooled = SessionManager(
        _config(tmp_path, pool_size=2, name_prefix="agents-sbx-tp"), client
    )
    keys = [f"pool:{uuid.uuid4().hex}" for _ in range(3)]
    try:
        pooled.fill_pool()
        assert pooled.pool_ready() == 2
        started = time.monotonic()
        first = pooled.session_for(keys[0])
        assert time.monotonic() - started < 1.0
        second = pooled.session_for(keys[1])
        third = pooled.session_for(keys[2])  # the pool is empty now: cold
        assert (pooled.pool_hits, pooled.pool_misses) == (2, 1)
        assert len({first.id, second.id, third.id}) == 3
        assert first.name == pooled.name_for(keys[0])
        first.run("mine = 1")
        assert second.run("print(mine)").error_name == "NameError"
    finally:
        pooled.shutdown()
        _remove_all(client, "agents-sbx-tp")


def test_the_reaper_removes_idle_sessions_and_orphans(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    config = _config(tmp_path, idle_seconds=1, name_prefix="agents-sbx-tr")
    reaping = SessionManager(config, client)
    try:
        idle = reaping.session_for("reap:idle")
        # An orphan: a pool container whose process is gone.
        orphan = Session.start(
            client,
            config,
            name="agents-sbx-tr-pool-orphan",
            labels={
                config.label: "1",
                f"{config.label}.owner": f"{os.uname().nodename}:999999999",
                f"{config.label}.pool": "1",
            },
        )
        time.sleep(1.5)
        fresh = reaping.session_for("reap:fresh")
        reaping.reap()
        names = {c.name for c in client.containers.list(all=True)}
        assert idle.name not in names
        assert orphan.name not in names
        assert fresh.name in names
        # The reaped key gets a new session on its next use, also in another
        # process that still holds a handle on the old one.
        other = SessionManager(config, client)
        assert other.session_for("reap:fresh").id == fresh.id
        time.sleep(1.5)
        reaping.reap()
        assert other.session_for("reap:fresh").id != fresh.id
        assert reaping.session_for("reap:idle").run("print(1)").stdout == "1\n"
    finally:
        _remove_all(client, "agents-sbx-tr")


def test_a_kernel_nobody_calls_exits_by_itself(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    config = _config(tmp_path, name_prefix="agents-sbx-ti")
    try:
        # Pool kernels live briefly unless their owner pings them, so the
        # pool of a crashed worker stops by itself.
        session = Session.start(
            client, config, name="agents-sbx-ti-pool-x", labels={}, idle=1
        )
        deadline = time.monotonic() + 15
        while session.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert session.dead
    finally:
        _remove_all(client, "agents-sbx-ti")


# -- hardening ----------------------------------------------------------------


def test_every_container_is_created_with_the_hardening_flags(
    session: Session, manager: SessionManager
) -> None:
    session.container.reload()
    host = session.container.attrs["HostConfig"]
    config = session.container.attrs["Config"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert not host.get("CapAdd")
    assert host["SecurityOpt"] == ["no-new-privileges"]  # default seccomp kept
    assert host["Privileged"] is False
    assert host["Memory"] == manager.config.memory_mb * 1024 * 1024
    assert host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == int(manager.config.cpus * 1e9)
    assert host["PidsLimit"] == manager.config.pids
    assert not host.get("Binds") and not host.get("Mounts")
    assert set(host["Tmpfs"]) == {"/tmp", "/mnt/data"}
    assert config["User"] == "10001:10001"
    assert not any(HOST_SECRET in entry for entry in config["Env"])
    assert container_kwargs(manager.config)["environment"] == {
        "AGENTS_OUTPUT_CAP": str(manager.config.output_cap)
    }


def test_attack_fork_bomb_is_contained(
    session: Session,
    client: docker.DockerClient,
    manager: SessionManager,
    sentinel: Path,
) -> None:
    result = session.run(
        "import os\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass",
        timeout=3,
    )
    assert result.timed_out
    assert_host_unaffected(client, manager, sentinel)


def test_attack_fork_bomb_hits_the_process_limit(session: Session) -> None:
    result = session.run(
        "import subprocess\nprocs = []\n"
        "try:\n"
        "    for _ in range(500):\n"
        "        procs.append(subprocess.Popen(['sleep', '30']))\n"
        "except OSError as exc:\n"
        "    print('refused after', len(procs), type(exc).__name__)\n"
        "for p in procs:\n    p.kill(); p.wait()"
    )
    assert result.ok, result.error
    assert result.stdout.startswith("refused after")
    assert int(result.stdout.split()[2]) < 64


def test_attack_memory_bomb_is_contained(
    session: Session,
    client: docker.DockerClient,
    manager: SessionManager,
    sentinel: Path,
) -> None:
    result = session.run("hog = []\nwhile True:\n    hog.append(bytearray(16 << 20))")
    if result.session_lost:
        assert "memory" in (result.error or "")
    else:
        assert result.error_name == "MemoryError"
    assert_host_unaffected(client, manager, sentinel)


@pytest.mark.parametrize("target", ["/mnt/data/fill", "/tmp/fill", "/dev/shm/fill"])
def test_attack_filling_the_disk_is_contained(
    target: str,
    session: Session,
    client: docker.DockerClient,
    manager: SessionManager,
    sentinel: Path,
) -> None:
    result = session.run(
        f"f = open({target!r}, 'wb')\nwhile True:\n    f.write(b'0' * (1 << 20))"
    )
    assert result.error_name == "OSError"
    assert "No space left" in (result.error or "")
    cleanup = session.run(f"import os; f.close(); os.remove({target!r}); print('ok')")
    assert cleanup.stdout == "ok\n"
    assert_host_unaffected(client, manager, sentinel)


def test_attack_endless_output_is_capped_and_stopped(session: Session) -> None:
    result = session.run("while True:\n    print('spam' * 100)", timeout=2)
    assert result.timed_out
    assert len(result.stdout.encode()) <= session.config.output_cap + 200
    assert "[output truncated" in result.stdout
    assert session.run("print('after')").stdout == "after\n"


def test_attack_endless_loop_is_stopped(session: Session) -> None:
    result = session.run("x = 0\nwhile True:\n    x += 1", timeout=1)
    assert result.timed_out
    assert session.run("print(x > 0)").stdout == "True\n"


@pytest.mark.parametrize(
    "code",
    [
        "import socket\nsocket.getaddrinfo('example.com', 80)",
        "import socket\nsocket.create_connection(('172.17.0.1', 2375), timeout=2)",
        "import socket\nsocket.create_connection(('169.254.169.254', 80), timeout=2)",
        "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)",
        "import urllib.request\nurllib.request.urlopen('http://10.0.2.2/', timeout=2)",
    ],
    ids=["dns", "tcp-to-host", "metadata", "internet", "http"],
)
def test_attack_network_access_fails(session: Session, code: str) -> None:
    result = session.run(code, timeout=5)
    assert result.error_name in {"gaierror", "OSError", "URLError", "TimeoutError"}
    assert not result.timed_out


def test_attack_only_loopback_exists(session: Session) -> None:
    result = session.run(
        "print(sorted(line.split(':')[0].strip() "
        "for line in open('/proc/net/dev').readlines()[2:]))"
    )
    assert result.stdout == "['lo']\n"


def test_attack_the_platform_environment_and_files_are_invisible(
    session: Session, sentinel: Path
) -> None:
    result = session.run(
        "import os\n"
        "print(sorted(os.environ))\n"
        "print(open('/proc/1/environ', 'rb').read())\n"
        f"print(os.path.exists({str(sentinel)!r}), os.path.exists({str(BASE_DIR)!r}))\n"
        "print(os.path.exists('/work'), os.path.exists('/root/.ssh'))\n"
        "print(sorted({l.split()[1] for l in open('/proc/mounts')}))"
    )
    assert result.ok, result.error
    assert HOST_SECRET not in result.stdout
    assert "SECRET_KEY" not in result.stdout and "DATABASE_URL" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[2] == "False False"
    assert lines[3] == "False False"
    mounts = eval(lines[4])  # noqa: S307 - our own program printed it
    allowed = {
        "/",
        "/tmp",
        "/mnt/data",
        "/etc/hosts",
        "/etc/hostname",
        "/etc/resolv.conf",
    }
    extra = {m for m in mounts if not m.startswith(("/proc", "/dev", "/sys"))}
    assert extra <= allowed, extra - allowed


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "/usr/lib/evil.py", "/opt/agents/kernel.py", "/evil"]
)
def test_attack_writing_outside_the_data_directories_fails(
    session: Session, path: str
) -> None:
    result = session.run(f"open({path!r}, 'a').write('x')")
    assert result.error_name in {"OSError", "PermissionError"}
    assert "Read-only file system" in (result.error or "") or "Permission" in (
        result.error or ""
    )


def test_attack_escalating_privileges_fails(session: Session) -> None:
    result = session.run(
        "import os, subprocess\n"
        "print(os.getuid(), os.geteuid(), os.getgid())\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
        "print(status['CapEff'].strip(), status['CapBnd'].strip())\n"
        "print(status['NoNewPrivs'].strip(), status['Seccomp'].strip())\n"
        "found = subprocess.run(['find', '/', '-xdev', '-perm', '/6000', '-type', 'f'],"
        " capture_output=True, text=True).stdout.split()\n"
        "print(found)\n"
        "try:\n    os.setuid(0)\nexcept PermissionError:\n    print('setuid refused')\n"
    )
    assert result.ok, result.error
    assert result.stdout.splitlines() == [
        "10001 10001 10001",
        "0000000000000000 0000000000000000",
        "1 2",
        "[]",
        "setuid refused",
    ]


def test_attack_the_docker_socket_is_unreachable(session: Session) -> None:
    result = session.run(
        "import os, socket\n"
        "print([p for p in ('/var/run/docker.sock', '/run/docker.sock',"
        " '/run/containerd/containerd.sock') if os.path.exists(p)])\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect('/var/run/docker.sock')"
    )
    assert result.stdout == "[]\n"
    assert result.error_name == "FileNotFoundError"


def test_attack_no_background_process_outlives_the_session(
    manager: SessionManager, client: docker.DockerClient
) -> None:
    key = f"bg:{uuid.uuid4().hex}"
    marker = str(4000 + os.getpid() % 1000)
    session = manager.session_for(key)
    result = session.run(
        "import subprocess\n"
        f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
        f"subprocess.Popen(['sh', '-c', 'nohup sleep {marker} &'])\n"
        "print('started')"
    )
    assert result.stdout == "started\n"
    assert _host_processes(f"sleep {marker}")
    manager.close(key)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(session.id)
    deadline = time.monotonic() + 10
    while _host_processes(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _host_processes(f"sleep {marker}")


def _host_processes(cmdline: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            raw = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if raw.replace(b"\0", b" ").strip() == cmdline.encode():
            found.append(int(proc.name))
    return found


def test_the_kernel_exits_and_the_session_is_replaced(manager: SessionManager) -> None:
    key = f"exit:{uuid.uuid4().hex}"
    try:
        result = manager.session_for(key).run("import os\nos._exit(3)")
        assert result.session_lost
        assert "exit code 3" in (result.error or "")
        assert manager.run(key, "print('back')").stdout == "back\n"
    finally:
        manager.close(key)


# -- the library's boundary ---------------------------------------------------


def test_the_sandbox_library_never_imports_django() -> None:
    code = (
        "import sys, sandbox, sandbox.manager, sandbox.session, sandbox.image.build\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'django', 'rest_framework', 'celery', 'config', 'core', 'tools'})\n"
        "assert not bad, bad"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()


_POOL_OWNER_SCRIPT = """
import os, sys, time
import django
django.setup()
from tools.code_interpreter.runtime import session_manager
manager = session_manager()
manager.start_pool()  # as the first code_interpreter call does
deadline = time.monotonic() + 120
while len(manager._pool) < 1:
    assert time.monotonic() < deadline, "the pool did not fill"
    time.sleep(0.2)
print(os.getpid(), flush=True)
"""


def test_a_process_that_ends_takes_its_warm_pool_with_it(
    client: docker.DockerClient, tmp_path: Path
) -> None:
    # The runtime's manager in a process of its own, as the test suite or a
    # web process holds one: its pool fills, the process ends normally, and
    # none of the containers it owned is left running.
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "SANDBOX_POOL_SIZE": "1",
        "SANDBOX_IMAGE": IMAGE,
        "SANDBOX_STATE_DIR": str(tmp_path / "state"),
        "PYTHONPATH": str(BASE_DIR),
    }
    done = subprocess.run(
        [sys.executable, "-c", _POOL_OWNER_SCRIPT],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    owner = f"{socket.gethostname()}:{done.stdout.split()[-1]}"
    left = client.containers.list(
        all=True, filters={"label": f"agents.sandbox.owner={owner}"}
    )
    for container in left:  # whatever the outcome, none outlives the test
        container.remove(force=True)
    assert left == []
