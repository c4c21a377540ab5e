"""The code interpreter's sandbox: round trips, session starts, concurrency.

    make bench-sandbox
    make bench-sandbox BENCH_SANDBOX_ARGS="--round-trips 500 --starts 30"

Talks to the Docker engine only (the sandbox library, no Django). Scenarios:

1. warm round trip: ``print(1)`` in a live session, host wall time per call
   (and the kernel's own execution time);
2. cold start: a new session without the pool (create + start + kernel
   ready), then its first call;
3. pool start: sessions handed out by a warm pool at a steady arrival rate
   (``--arrival-ms`` apart), with the pool filling in the background; the
   share of first calls served from the pool;
4. 20 sessions at once: 20 threads each start a session and run a small
   numpy program, without the pool.

Figures are printed and written to ``bench/results/sandbox-<timestamp>.json``.
It never asserts timings.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from sandbox import SandboxConfig, SessionManager, docker_client  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(pct(values, 50), 2),
        "p95_ms": round(pct(values, 95), 2),
        "max_ms": round(max(values), 2) if values else float("nan"),
        "mean_ms": round(statistics.fmean(values), 2) if values else float("nan"),
    }


def line(name: str, figures: dict[str, Any]) -> None:
    rest = "  ".join(f"{k}={v}" for k, v in figures.items())
    print(f"  {name:<34} {rest}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default=os.environ.get("SANDBOX_IMAGE"))
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--pooled-sessions", type=int, default=40)
    parser.add_argument("--arrival-ms", type=float, default=500)
    parser.add_argument("--concurrent", type=int, default=20)
    args = parser.parse_args()

    client = docker_client()
    state = tempfile.mkdtemp(prefix="agents-sandbox-bench-")
    prefix = f"agents-sbx-bench{os.getpid()}"
    base = SandboxConfig(state_dir=state, name_prefix=prefix, pool_size=0)
    if args.image:
        base = SandboxConfig(**{**vars(base), "image": args.image})
    results: dict[str, Any] = {
        "image": base.image,
        "engine": client.version().get("Version"),
        "cpus": os.cpu_count(),
    }
    print(f"sandbox benchmark: image {base.image}, Docker {results['engine']}")
    try:
        run_all(client, base, args, results)
    finally:
        for container in client.containers.list(all=True, filters={"name": prefix}):
            container.remove(force=True)
    out = BASE_DIR / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"sandbox-{stamp}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results: {path.relative_to(BASE_DIR)}")


def run_all(
    client: Any, base: SandboxConfig, args: argparse.Namespace, results: dict[str, Any]
) -> None:
    cold = SessionManager(base, client)

    # 1. warm round trip
    key = f"bench:{uuid.uuid4().hex}"
    session = cold.session_for(key)
    for _ in range(20):
        session.run("print(1)")
    host, kernel = [], []
    for _ in range(args.round_trips):
        started = time.perf_counter()
        result = session.run("print(1)")
        host.append((time.perf_counter() - started) * 1000)
        kernel.append(result.duration_ms)
        assert result.stdout == "1\n", result
    cold.close(key)
    results["warm_round_trip"] = summary(host)
    results["warm_kernel_exec"] = summary(kernel)
    print("warm round trip (print(1) in a live session)")
    line("host round trip", results["warm_round_trip"])
    line("inside the kernel", results["warm_kernel_exec"])

    # 2. cold start, no pool
    starts, firsts = [], []
    for _ in range(args.starts):
        key = f"bench:{uuid.uuid4().hex}"
        started = time.perf_counter()
        session = cold.session_for(key)
        ready = time.perf_counter()
        session.run("print(1)")
        done = time.perf_counter()
        starts.append((ready - started) * 1000)
        firsts.append((done - started) * 1000)
        cold.close(key)
    results["cold_start"] = summary(starts)
    results["cold_start_first_call"] = summary(firsts)
    print("cold session start, no pool")
    line("session start", results["cold_start"])
    line("start + first print(1)", results["cold_start_first_call"])

    # 3. from the warm pool, steady arrivals
    pooled = SessionManager(
        SandboxConfig(**{**vars(base), "pool_size": args.pool_size}), client
    )
    pooled.fill_pool()
    pooled.start_pool()
    starts, firsts, keys = [], [], []
    for _ in range(args.pooled_sessions):
        key = f"bench:{uuid.uuid4().hex}"
        keys.append(key)
        started = time.perf_counter()
        session = pooled.session_for(key)
        ready = time.perf_counter()
        session.run("print(1)")
        done = time.perf_counter()
        starts.append((ready - started) * 1000)
        firsts.append((done - started) * 1000)
        time.sleep(args.arrival_ms / 1000)
    hits, misses = pooled.pool_hits, pooled.pool_misses
    pooled.shutdown()
    for key in keys:
        pooled.close(key)
    results["pool_start"] = summary(starts)
    results["pool_start_first_call"] = summary(firsts)
    results["pool_hit_ratio"] = round(hits / max(1, hits + misses), 4)
    results["pool_config"] = {
        "pool_size": args.pool_size,
        "arrival_ms": args.arrival_ms,
        "sessions": args.pooled_sessions,
    }
    print(
        f"session start from the warm pool (pool {args.pool_size}, a new "
        f"session every {args.arrival_ms:g} ms)"
    )
    line("session start", results["pool_start"])
    line("start + first print(1)", results["pool_start_first_call"])
    line("first calls served from the pool", {"ratio": results["pool_hit_ratio"]})

    # 4. many sessions at once
    def one(n: int) -> float:
        key = f"bench:{uuid.uuid4().hex}"
        started = time.perf_counter()
        result = cold.session_for(key).run(
            "import numpy as np\nprint(float(np.arange(1000).sum()))"
        )
        assert result.stdout == "499500.0\n", result
        return (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.concurrent) as pool:
        durations = list(pool.map(one, range(args.concurrent)))
    wall = (time.perf_counter() - started) * 1000
    results["concurrent"] = {**summary(durations), "wall_ms": round(wall, 1)}
    print(f"{args.concurrent} sessions at once (cold start + numpy import + sum)")
    line("per session", results["concurrent"])
    for container in client.containers.list(
        all=True, filters={"name": base.name_prefix}
    ):
        container.remove(force=True)


if __name__ == "__main__":
    main()
