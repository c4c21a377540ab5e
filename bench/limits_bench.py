"""Quotas and limits: what the limiter costs, and how fast refusals are.

Run under the launcher (embedded PostgreSQL and Redis)::

    make bench-limits
    make bench-limits BENCH_LIMITS_ARGS="--requests 50"

Starts uvicorn as ``make run`` does (``bench.settings``), with one project
and keys whose per-key overrides pick the path measured:

- baseline: ``GET /bench/baseline`` (no DRF, no auth, no database);
- floor, no limiter: ``GET /v1/assistants?limit=1`` with a key whose limit
  is 0 (unlimited: no Redis call);
- floor, limiter on: the same with a limit of 10^9 (one GCRA script in
  Redis per request, never refusing);
- 429 rate limit: the same with a limit of 1, already spent;
- 429 insufficient_quota: ``POST /v1/threads/runs`` for a project whose
  daily token budget is spent;
- 413 10 MB body, 400 1,000-level nesting, 400 100,000 messages (3.3 MB),
  400 10,000 metadata keys: ``POST /v1/threads``.

One client, sequential requests; prints median/p95 latency and the ratio of
each median to the baseline's, measured in the same run. Writes
bench/results/limits-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api_bench import (  # noqa: E402  (needs the project root on sys.path)
    HOST,
    SETTINGS_MODULE,
    Server,
    migrate,
    tenant_create,
)
from bench.common import BASE_DIR, RESULTS_DIR  # noqa: E402


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _keys() -> dict[str, Any]:
    """Keys and fixtures for each path (Django is set up by tenant_create)."""
    from assistants.models import Run, Thread
    from core.models import Organization, ProjectLimits
    from core.services.keys import api_key_create
    from core.services.tenancy import project_create

    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"
    org = Organization.objects.create(name=f"limits bench {stamp}")
    project = project_create(organization=org, name="limits")
    keys: dict[str, Any] = {}
    for name, rpm in (("off", 0), ("on", 10**9), ("spent", 1)):
        issued = api_key_create(project=project, name=name)
        issued.api_key.requests_per_minute = rpm
        issued.api_key.save(update_fields=["requests_per_minute"])
        keys[name] = issued.raw
    broke = project_create(organization=org, name="no budget left")
    ProjectLimits.objects.create(project=broke, daily_token_budget=1)
    thread = Thread.objects.create(project=broke)
    Run.objects.create(
        project=broke,
        thread=thread,
        assistant_id="asst_x",
        model="bench-model",
        status="completed",
        usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    )
    broke_key = api_key_create(project=broke, name="broke")
    broke_key.api_key.requests_per_minute = 0
    broke_key.api_key.runs_per_minute = 0
    broke_key.api_key.save(update_fields=["requests_per_minute", "runs_per_minute"])
    keys["broke"] = broke_key.raw
    keys["org"] = org
    return keys


def _measure(
    port: int,
    method: str,
    path: str,
    *,
    key: str | None,
    body: bytes | None,
    expect: int,
    n: int,
) -> list[float]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    times: list[float] = []
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    for _ in range(n):
        started = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
        except (ConnectionError, http.client.HTTPException):
            # A 413 answered before the body was read closes the connection
            # while we are still sending: the answer was already given.
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=60)
            times.append(time.perf_counter() - started)
            continue
        times.append(time.perf_counter() - started)
        if response.status != expect:
            raise RuntimeError(f"{method} {path}: {response.status}, want {expect}")
        if response.getheader("connection", "").lower() == "close":
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=60)
    conn.close()
    return times


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="per scenario")
    parser.add_argument(
        "--big-requests", type=int, default=20, help="per oversize scenario"
    )
    args = parser.parse_args(argv)
    data_dir = Path(os.environ.get("DATA_DIR", BASE_DIR / ".data"))
    load = os.getloadavg()
    print(f"[bench] load average before: {load[0]:.2f} on {os.cpu_count()} cores")
    migrate(SETTINGS_MODULE)
    tenant_create(SETTINGS_MODULE)  # sets Django up, registers bench-model
    keys = _keys()
    from assistants.models import Assistant

    broke_project = keys["org"].projects.get(name="no budget left")
    assistant = Assistant.objects.create(project=broke_project, model="bench-model")
    server = Server(
        workers=1,
        app="config.asgi:application",
        settings=SETTINGS_MODULE,
        log_path=data_dir / "bench-limits-server.log",
    )
    deep = ("[" * 1000 + "]" * 1000).encode()
    many = json.dumps(
        {"messages": [{"role": "user", "content": "x"}] * 100_000}
    ).encode()
    big = json.dumps({"metadata": {"k": "x" * (10 * 1024 * 1024)}}).encode()
    meta = json.dumps({"metadata": {f"k{i}": "v" for i in range(10_000)}}).encode()
    n, nb = args.requests, args.big_requests
    scenarios: list[tuple[str, str, str, str | None, bytes | None, int, int]] = [
        ("baseline", "GET", "/bench/baseline", None, None, 200, n),
        (
            "floor, no limiter",
            "GET",
            "/v1/assistants?limit=1",
            keys["off"],
            None,
            200,
            n,
        ),
        (
            "floor, limiter on",
            "GET",
            "/v1/assistants?limit=1",
            keys["on"],
            None,
            200,
            n,
        ),
        (
            "429 rate limit",
            "GET",
            "/v1/assistants?limit=1",
            keys["spent"],
            None,
            429,
            n,
        ),
        (
            "429 insufficient_quota",
            "POST",
            "/v1/threads/runs",
            keys["broke"],
            json.dumps({"assistant_id": assistant.id}).encode(),
            429,
            n,
        ),
        ("413 10 MB body", "POST", "/v1/threads", keys["off"], big, 413, nb),
        ("400 1,000-level nesting", "POST", "/v1/threads", keys["off"], deep, 400, n),
        ("400 100,000 messages", "POST", "/v1/threads", keys["off"], many, 400, nb),
        ("400 10,000 metadata keys", "POST", "/v1/threads", keys["off"], meta, 400, nb),
    ]
    results: dict[str, dict[str, float]] = {}
    try:
        server.start()
        # Spend the 1-per-minute key's only request.
        _measure(
            server.port, "GET", "/v1/assistants?limit=1",
            key=keys["spent"], body=None, expect=200, n=1,
        )  # fmt: skip
        for name, method, path, key, body, expect, count in scenarios:
            times = _measure(
                server.port, method, path, key=key, body=body, expect=expect, n=count
            )
            results[name] = {
                "n": len(times),
                "median_ms": statistics.median(times) * 1000,
                "p95_ms": _pct(times, 95) * 1000,
            }
    finally:
        server.stop()
        keys["org"].delete()
    base = results["baseline"]["median_ms"]
    print(
        f"{'scenario':28} {'n':>5} {'median ms':>10} {'p95 ms':>9} {'x baseline':>10}"
    )
    for name, r in results.items():
        r["ratio_to_baseline"] = r["median_ms"] / base if base else 0.0
        print(
            f"{name:28} {r['n']:>5} {r['median_ms']:>10.2f} {r['p95_ms']:>9.2f} "
            f"{r['ratio_to_baseline']:>10.1f}"
        )
    on, off = results["floor, limiter on"], results["floor, no limiter"]
    print(
        f"[bench] limiter cost per request: {on['median_ms'] - off['median_ms']:+.2f} "
        f"ms median ({on['median_ms'] / off['median_ms']:.2f}x the unlimited floor)"
    )
    load = os.getloadavg()
    print(f"[bench] load average after: {load[0]:.2f}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"limits-{stamp}.json"
    out.write_text(json.dumps({"results": results, "load": load}, indent=2))
    print(f"[bench] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
