"""Build the web/worker image: ``python deploy/build.py`` (``make deploy-images``).

One image runs every role (``deploy/entrypoint.sh``: web, worker-runs,
worker-ingestion, beat, migrate). It is tagged ``agents:<hash>`` (and
``agents:latest``), the hash covering the Dockerfile, the sources copied in,
the dependency list and the base image; a build whose tag exists is skipped.

No registry is needed at build time:

- Dependencies are resolved and downloaded **on the host** with the host's own
  pip (its index, proxy, certificates and cache; ``pip wheel``) into a
  wheelhouse in the build context, and the image installs them with
  ``pip install --no-index`` from it. (On this machine a container cannot use
  the package index: the host reaches it through a proxy whose certificate
  only the host trusts, and that certificate must not be baked into an image.)
- ``BASE`` is any Debian-based image with Python 3.11 whose ``python3 -m venv
  --without-pip`` works: ``python:3.11-slim-bookworm`` from a registry, or,
  offline, the debootstrapped ``agents-sandbox-base:<hash>`` that
  ``make sandbox-image`` produces. ``--base`` / ``AGENTS_IMAGE_BASE`` choose
  it; by default the registry image when present locally, else the newest
  local sandbox base.

The sandbox image itself is not rebuilt here: ``make deploy-images`` runs
``make sandbox-image`` (sandbox/image/) first.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REPOSITORY = "agents"
REGISTRY_BASE = "python:3.11-slim-bookworm"
SANDBOX_BASE_REPOSITORY = "agents-sandbox-base"
# What the image runs: the Django project and its apps (no tests, benchmarks
# or local data), plus the role scripts from deploy/.
SOURCES = ["config", "core", "assistants", "tools", "sandbox", "store"]
SOURCE_FILES = ["manage.py", "pyproject.toml"]
DEPLOY_FILES = ["entrypoint.sh", "healthcheck.py", "local_services.py"]
SKIP_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache"}
# Wheels a Python older than the host's may need that the host's resolution
# skips by environment marker: Debian bookworm's python3 is 3.11.2 and redis
# needs async-timeout below 3.11.3. Fetched into the wheelhouse only; the
# image's pip takes them when its markers ask.
MARKER_EXTRAS = ["async-timeout>=4.0.3"]
# Earlier builds are removed once older than this (prune()).
PRUNE_AFTER_SECONDS = 24 * 3600
# Bump when the recipe in this file changes in a way the hash cannot see.
RECIPE = "1"


def log(message: str) -> None:
    print(f"[deploy-image] {message}", flush=True)


def requirements() -> list[str]:
    """The runtime dependencies, exactly as pyproject.toml lists them."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [str(item) for item in data["project"]["dependencies"]]


def source_files() -> list[tuple[str, Path]]:
    """(path in the image's /app, path on the host), sorted."""
    found: list[tuple[str, Path]] = []
    for name in SOURCES:
        for path in (ROOT / name).rglob("*"):
            if path.is_file() and not SKIP_PARTS.intersection(path.parts):
                if path.suffix in {".pyc", ".pyo"}:
                    continue
                found.append((str(path.relative_to(ROOT)), path))
    for name in SOURCE_FILES:
        found.append((name, ROOT / name))
    for name in DEPLOY_FILES:
        found.append((f"deploy/{name}", HERE / name))
    templates = ROOT / "templates"
    if templates.is_dir():
        for path in templates.rglob("*"):
            if path.is_file():
                found.append((str(path.relative_to(ROOT)), path))
    return sorted(found)


def content_hash(base: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"recipe={RECIPE}\nbase={base}\n".encode())
    digest.update((HERE / "Dockerfile").read_bytes())
    for line in requirements():
        digest.update(f"req={line}\n".encode())
    for relative, path in source_files():
        digest.update(relative.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


def docker(*args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], check=False, text=True, capture_output=capture
    )


def image_exists(reference: str) -> bool:
    return docker("image", "inspect", reference, capture=True).returncode == 0


def pick_base(requested: str | None) -> str:
    """The base image: as asked, else the registry one if local, else ours."""
    if requested:
        return requested
    if image_exists(REGISTRY_BASE):
        return REGISTRY_BASE
    listed = docker(
        "images",
        SANDBOX_BASE_REPOSITORY,
        "--format",
        "{{.CreatedAt}}\t{{.Repository}}:{{.Tag}}",
        capture=True,
    ).stdout.splitlines()
    local = sorted(line for line in listed if not line.endswith(":<none>"))
    if local:
        return local[-1].split("\t")[1]
    # Not here: let the build pull it (a machine with a registry).
    return REGISTRY_BASE


def wheelhouse(cache: Path) -> Path:
    """The wheelhouse for the current dependency list, built once.

    Kept in the cache directory under a hash of the requirements: a
    source-only change then reuses it as it is, and Docker's layer cache
    (COPY compares contents) skips the dependency install too.
    """
    lines = requirements() + MARKER_EXTRAS
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
    target = cache / f"wheels-{digest}"
    for earlier in cache.glob("wheels-*"):
        # Wheelhouses of earlier dependency lists (a few hundred MB each).
        if earlier.name != target.name and not earlier.name.endswith(".partial"):
            shutil.rmtree(earlier, ignore_errors=True)
    if (target / ".complete").exists():
        log(f"wheelhouse {target.name} exists: reused")
        return target
    shutil.rmtree(target, ignore_errors=True)
    partial = cache / f"wheels-{digest}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    wheels = partial / "wheels"
    wheels.mkdir(parents=True)
    (wheels / "requirements.txt").write_text("\n".join(requirements()) + "\n")
    started = time.monotonic()
    log("collecting wheels with the host's pip (reuses its cache)")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--progress-bar",
            "off",
            "--wheel-dir",
            str(wheels),
            "-r",
            str(wheels / "requirements.txt"),
            *MARKER_EXTRAS,
        ],
        check=True,
    )
    # pip itself, run from its wheel inside the image: neither base needs to
    # ship pip (Debian's python3 has no ensurepip), and the final image
    # carries none.
    pip_dir = partial / "pip"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--progress-bar",
            "off",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(pip_dir),
            "pip",
        ],
        check=True,
    )
    shutil.move(next(pip_dir.glob("pip-*.whl")), partial / "pip.whl")
    shutil.rmtree(pip_dir)
    size = sum(p.stat().st_size for p in wheels.iterdir()) / 1e6
    log(
        f"wheelhouse: {len(list(wheels.glob('*.whl')))} wheels, {size:.0f} MB, "
        f"{time.monotonic() - started:.0f}s"
    )
    (partial / ".complete").touch()
    partial.rename(target)
    return target


def _link_tree(source: Path, destination: Path) -> None:
    """Hard links (same file system as the cache), else copies."""
    for path in source.rglob("*"):
        relative = path.relative_to(source)
        if path.is_dir():
            (destination / relative).mkdir(parents=True, exist_ok=True)
            continue
        (destination / relative).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination / relative)
        except OSError:
            shutil.copy2(path, destination / relative)


def build(*, base: str, tag: str, force: bool) -> str:
    reference = f"{REPOSITORY}:{tag}"
    if image_exists(reference) and not force:
        log(f"{reference} exists (same inputs): skipped")
        docker("tag", reference, f"{REPOSITORY}:latest")
        return reference
    started = time.monotonic()
    cache = Path(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    ).joinpath("agents-deploy")
    cache.mkdir(parents=True, exist_ok=True)
    wheels = wheelhouse(cache)
    with tempfile.TemporaryDirectory(dir=cache, prefix="context-") as tmp:
        context = Path(tmp)
        _link_tree(wheels, context)
        (context / ".complete").unlink()
        for relative, path in source_files():
            destination = context / "src" / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
        shutil.copy2(HERE / "Dockerfile", context / "Dockerfile")
        log(f"docker build {reference} from {base} (a few minutes the first time)")
        result = subprocess.run(
            [
                "docker",
                "build",
                "--build-arg",
                f"BASE={base}",
                "--label",
                f"org.opencontainers.image.base.name={base}",
                "--label",
                f"agents.content-hash={tag}",
                "-t",
                reference,
                str(context),
            ],
            # The classic builder: it uses a local BASE as it is and never
            # asks a registry about it (BuildKit would, for the frontend).
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"docker build failed ({result.returncode})")
    docker("tag", reference, f"{REPOSITORY}:latest")
    prune(keep=reference)
    size = docker(
        "image", "inspect", reference, "--format", "{{.Size}}", capture=True
    ).stdout.strip()
    log(
        f"built {reference} (also {REPOSITORY}:latest), "
        f"{int(size or 0) / 1e6:.0f} MB, in {time.monotonic() - started:.0f}s"
    )
    return reference


def prune(*, keep: str) -> None:
    """Remove earlier agents:<hash> builds (each may hold its own copy of the
    1.5 GB dependency layer) that are over a day old. Recent ones stay: a
    concurrent test or deployment may be about to start one, and docker
    refuses to remove an image a container uses anyway."""
    listed = docker(
        "images",
        REPOSITORY,
        "--format",
        "{{.Repository}}:{{.Tag}}\t{{.CreatedAt}}",
        capture=True,
    ).stdout.splitlines()
    cutoff = time.time() - PRUNE_AFTER_SECONDS
    for line in listed:
        reference, _, created = line.partition("\t")
        tag = reference.split(":", 1)[1]
        if reference == keep or tag == "latest" or len(tag) != 12:
            continue
        try:
            stamp = time.mktime(time.strptime(created[:19], "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            continue
        # CreatedAt is in the daemon's zone; a day's margin absorbs it.
        if stamp < cutoff and docker("rmi", reference, capture=True).returncode == 0:
            log(f"removed the earlier build {reference}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--base",
        default=os.environ.get("AGENTS_IMAGE_BASE") or None,
        help="base image (default: python:3.11-slim-bookworm if local, "
        "else the newest agents-sandbox-base)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild anyway")
    parser.add_argument(
        "--print-tag", action="store_true", help="print the tag the inputs give"
    )
    arguments = parser.parse_args(argv)
    base = pick_base(arguments.base)
    tag = content_hash(base)
    if arguments.print_tag:
        print(f"{REPOSITORY}:{tag}")
        return 0
    print(build(base=base, tag=tag, force=arguments.force))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
