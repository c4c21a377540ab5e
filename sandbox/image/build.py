"""Build the sandbox image offline: ``python -m sandbox.image.build``
(``make sandbox-image``).

Two cached stages, each tagged with a hash of its inputs so that a build whose
image exists is skipped:

1. ``agents-sandbox-base:<hash>``: a minimal Debian root filesystem made with
   ``debootstrap --variant=minbase`` (Python 3 and Debian's numpy, pandas,
   matplotlib, scipy; no recommends), stripped of docs, locales, caches and
   every setuid/setgid bit, then ``docker import``-ed. The Debian mirror is
   the one this machine's apt uses (``/etc/apt/sources.list*``), or
   ``SANDBOX_DEBIAN_MIRROR``.
2. ``agents-sandbox:<hash>`` (also tagged ``agents-sandbox:latest``): the
   kernel on top, from ``Dockerfile.local`` with ``pull=False``.

Needs root (debootstrap) and a Docker engine. The production route from a
registry image is ``sandbox/image/Dockerfile``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
PACKAGES = [
    # PID 1: reaps the zombies of the user's processes (Docker's own init
    # would be a bind mount from the host).
    "tini",
    "python3",
    "python3-numpy",
    "python3-pandas",
    "python3-matplotlib",
    "python3-scipy",
]
# Bump when the rootfs recipe below changes (it is part of the base's hash).
RECIPE = "6"
# Pulled in by Depends but never needed to run code: the C/C++ toolchain
# and Boost headers (python3-scipy -> python3-pythran), sympy, perl,
# Unicode data files, JavaScript for docs. Purged after debootstrap (dpkg
# --force-depends): about 600 MB. The build's smoke test imports and plots.
PURGE = [
    "libboost1.74-dev",
    "libboost-dev",
    "perl",
    "perl-modules-5.36",
    "libperl5.36",
    "unicode-data",
    "python3-pythran",
    "python3-gast",
    "python3-beniget",
    "python3-sympy",
    "g++",
    "g++-12",
    "gcc",
    "gcc-12",
    "cpp",
    "cpp-12",
    "libstdc++-12-dev",
    "libgcc-12-dev",
    "libc6-dev",
    "libc-dev-bin",
    "linux-libc-dev",
    "libcrypt-dev",
    "libnsl-dev",
    "libtirpc-dev",
    "rpcsvc-proto",
    "binutils",
    "binutils-common",
    "binutils-x86-64-linux-gnu",
    "libbinutils",
    "libctf0",
    "libctf-nobfd0",
    "libgprofng0",
    "libjansson4",
    "libasan8",
    "libtsan2",
    "liblsan0",
    "libubsan1",
    "libhwasan0",
    "libitm1",
    "libcc1-0",
    "libisl23",
    "libmpc3",
    "libjs-jquery-ui",
    "libjs-jquery",
    "libjs-underscore",
    "libjs-sphinxdoc",
    "python3-numpy-dev",
    "libpython3-dev",
    "libpython3.11-dev",
    "python3-dev",
    "python3.11-dev",
    "libexpat1-dev",
    "zlib1g-dev",
    "libblas-dev",
    "liblapack-dev",
    "libopenblas-dev",
    "libopenblas-pthread-dev",
    "libopenblas0-pthread-dev",
]
STRIP = [
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/linda",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf",
    "var/log",
]
KERNEL_FILES = ["kernel.py", "agents_backend.py", "Dockerfile.local"]
REPOSITORY = "agents-sandbox"


def log(message: str) -> None:
    print(f"[sandbox-image] {message}", flush=True)


def base_hash() -> str:
    digest = hashlib.sha256()
    digest.update("\n".join([SUITE, RECIPE, *PACKAGES, *PURGE, *STRIP]).encode())
    return digest.hexdigest()[:12]


def image_hash() -> str:
    digest = hashlib.sha256(base_hash().encode())
    for name in KERNEL_FILES:
        digest.update(name.encode())
        digest.update((HERE / name).read_bytes())
    return digest.hexdigest()[:12]


def image_tag() -> str:
    """The tag the current sources build (a content hash)."""
    return f"{REPOSITORY}:{image_hash()}"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt is configured with."""
    override = os.environ.get("SANDBOX_DEBIAN_MIRROR")
    if override:
        return override
    sources = Path("/etc/apt")
    files = [sources / "sources.list", *sorted(sources.glob("sources.list.d/*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":  # deb822
            for block in text.split("\n\n"):
                uris = re.search(r"^URIs:\s*(\S+)", block, re.M)
                suites = re.search(r"^Suites:\s*(.+)$", block, re.M)
                if uris and suites and SUITE in suites.group(1).split():
                    return uris.group(1)
        else:
            for line in text.splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[-2:-1]:
                    url = next((p for p in parts[1:] if "://" in p), None)
                    if url and SUITE in parts:
                        return url
    raise SystemExit(
        "no Debian mirror found in /etc/apt/sources.list*; set SANDBOX_DEBIAN_MIRROR"
    )


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def build_rootfs(target: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise SystemExit("debootstrap is missing: apt-get install -y debootstrap")
    mirror = debian_mirror()
    log(f"debootstrap {SUITE} (minbase + {len(PACKAGES)} packages); takes minutes")
    started = time.monotonic()
    process = subprocess.Popen(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(target),
            mirror,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    last = 0.0
    for line in process.stdout:
        # debootstrap prints one line per package; show a heartbeat, not all.
        now = time.monotonic()
        if line.startswith(("E:", "W:")) or now - last > 15:
            log(f"  {now - started:5.0f}s  {line.strip()[:100]}")
            last = now
    if process.wait() != 0:
        raise SystemExit(f"debootstrap failed (exit {process.returncode})")
    log(f"debootstrap done in {time.monotonic() - started:.0f}s; stripping")
    query = subprocess.run(
        ["chroot", str(target), "dpkg-query", "-W", "-f=${Package}\n"],
        check=True,
        capture_output=True,
        text=True,
    )
    installed = set(query.stdout.split())
    purge = [name for name in PURGE if name in installed]
    if purge:
        log(f"purging {len(purge)} packages not needed at run time")
        subprocess.run(
            ["chroot", str(target), "dpkg", "--purge", "--force-depends", *purge],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    for rel in STRIP:
        path = target / rel
        if path.is_dir():
            shutil.rmtree(path)
            path.mkdir(parents=True)
    # The libraries' own test suites are a third of their size.
    site = target / "usr/lib/python3/dist-packages"
    for library in ("numpy", "pandas", "scipy", "matplotlib"):
        for tests in list((site / library).glob("**/tests")):
            shutil.rmtree(tests, ignore_errors=True)
    # No setuid/setgid binaries: nothing in the sandbox can gain privileges.
    subprocess.run(
        [
            "find",
            str(target),
            "-xdev",
            "-type",
            "f",
            "-perm",
            "/6000",
            "-exec",
            "chmod",
            "ug-s",
            "{}",
            "+",
        ],
        check=True,
    )
    with (target / "etc/passwd").open("a") as fh:
        fh.write("sandbox:x:10001:10001::/tmp:/usr/sbin/nologin\n")
    with (target / "etc/group").open("a") as fh:
        fh.write("sandbox:x:10001:\n")
    (target / "mnt/data").mkdir(parents=True, exist_ok=True)


def import_rootfs(target: Path, tag: str) -> None:
    log(f"docker import -> {tag}")
    tar = subprocess.Popen(
        ["tar", "-C", str(target), "--numeric-owner", "-c", "."],
        stdout=subprocess.PIPE,
    )
    subprocess.run(
        ["docker", "import", "--message", "agents sandbox rootfs", "-", tag],
        stdin=tar.stdout,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if tar.wait() != 0:
        raise SystemExit("tar of the root filesystem failed")


def build(force: bool = False) -> str:
    client = docker.from_env()
    tag = image_tag()
    latest = f"{REPOSITORY}:latest"
    if not force and image_exists(client, tag):
        log(f"{tag} exists; skipping the build")
        client.images.get(tag).tag(REPOSITORY, "latest")
        prune(client, keep={tag, f"{REPOSITORY}-base:{base_hash()}", latest})
        return tag
    base = f"{REPOSITORY}-base:{base_hash()}"
    if force or not image_exists(client, base):
        workdir = Path(tempfile.mkdtemp(prefix="agents-rootfs-", dir="/var/tmp"))
        try:
            build_rootfs(workdir / "rootfs")
            import_rootfs(workdir / "rootfs", base)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    else:
        log(f"{base} exists; reusing it")
    log(f"adding the kernel -> {tag}")
    image, _ = client.images.build(
        path=str(HERE),
        dockerfile="Dockerfile.local",
        tag=tag,
        buildargs={"BASE": base},
        pull=False,
        rm=True,
        forcerm=True,
    )
    smoke = client.containers.run(
        tag,
        entrypoint=["/usr/bin/python3", "-c"],
        command=[
            "import io, numpy, pandas, scipy.stats, scipy.optimize\n"
            "import matplotlib; matplotlib.use('Agg')\n"
            "import matplotlib.pyplot as plt\n"
            "frame = pandas.DataFrame({'x': numpy.arange(5)})\n"
            "plt.plot(frame.x, scipy.stats.norm.pdf(frame.x))\n"
            "plt.title('smoke test')\n"
            "plt.savefig(io.BytesIO(), format='png')\n"
            "plt.savefig(io.BytesIO(), format='pdf')\n"
            "print('ok')"
        ],
        network_mode="none",
        remove=True,
        stderr=True,
    )
    log(f"smoke test: {smoke.decode().strip()}")
    image.tag(REPOSITORY, "latest")
    size = client.images.get(tag).attrs.get("Size", 0) / 1e6
    log(f"built {tag} (also {REPOSITORY}:latest), {size:.0f} MB")
    prune(client, keep={tag, base, latest})
    return tag


def prune(client: docker.DockerClient, keep: set[str]) -> None:
    """Remove the images of earlier builds (those no container uses)."""
    for image in client.images.list():
        for old in image.tags:
            if old in keep or old.split(":")[0] not in (
                REPOSITORY,
                f"{REPOSITORY}-base",
            ):
                continue
            try:
                client.images.remove(old)
                log(f"removed the earlier build {old}")
            except docker.errors.APIError:
                pass  # still used by a container


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild both stages")
    parser.add_argument("--print-tag", action="store_true", help="print the tag")
    args = parser.parse_args()
    if args.print_tag:
        print(image_tag())
        return
    started = time.monotonic()
    build(force=args.force)
    log(f"done in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
