"""Restarts under load: PostgreSQL and Redis restarted, workers SIGKILLed.

Starts a private stack (its own embedded PostgreSQL and Redis in
``--data-dir``, the scripted engine, uvicorn, Celery workers; see
``tests/restart_harness.py``), drives a loopback load of a few clients
creating assistants, threads, messages and runs, and meanwhile restarts
PostgreSQL (alternately fast and immediate, i.e. crash-like, shutdowns) and
Redis several times each and kills workers with SIGKILL. Then it waits for
every run to end, reads back every acknowledged object through the API and
prints: requests sent, acknowledged, lost (must be 0), 503s during outages,
other errors (must be 0), recovery time per restart (median/max), runs left
non-terminal (must be 0), and ``fsync``/``synchronous_commit``. JSON goes to
``bench/results/restart-<time>.json``.

    make bench-restart
    make bench-restart BENCH_RESTART_ARGS="--restarts 2 --clients 2"
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS_DIR  # noqa: E402
from tests.restart_harness import Cluster, Report, drill  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--restarts", type=int, default=4, help="of each dependency")
    parser.add_argument("--kills", type=int, default=3, help="worker SIGKILLs")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--down-seconds", type=float, default=3.0)
    parser.add_argument(
        "--long-down-seconds",
        type=float,
        default=15.0,
        help="every second restart of each dependency (0: none)",
    )
    parser.add_argument("--steady-seconds", type=float, default=10.0)
    parser.add_argument("--data-dir", type=Path, default=None)
    return parser.parse_args(argv)


def plan_of(restarts: int, kills: int) -> list[str]:
    """Interleaved: postgres, redis, worker, postgres, redis, ..."""
    plan: list[str] = []
    for i in range(max(restarts, kills)):
        if i < restarts:
            plan += ["postgres", "redis"]
        if i < kills:
            plan.append("worker")
    return plan


def show(report: Report, args: argparse.Namespace) -> None:
    print(
        f"restart drill: {args.clients} clients, {args.workers} workers, "
        f"{args.restarts} PostgreSQL + {args.restarts} Redis restarts "
        f"({args.down_seconds:.0f} s down, every second one "
        f"{args.long_down_seconds:.0f} s), {args.kills} worker SIGKILLs"
    )
    print(f"  requests sent          {report.sent}")
    print(f"  acknowledged (2xx)     {report.acknowledged}")
    print(f"  objects audited        {report.audited}")
    print(f"  lost                   {report.lost}  (must be 0)")
    print(f"  503 during outages     {report.unavailable_503}")
    print(f"  other errors           {report.other_errors}  (must be 0)")
    for sample in report.error_samples:
        print(f"    {sample}")
    for kind, figures in report.recovery_seconds.items():
        print(
            f"  recovery {kind:<18} median {figures['median']:.2f} s, "
            f"max {figures['max']:.2f} s over {figures['count']:.0f}"
        )
    for event in report.events:
        nan = float("nan")
        api = event["recovery"] if event["recovery"] is not None else nan
        run = event["run_recovery"] if event["run_recovery"] is not None else nan
        down = event["back_at"] - event["down_at"]
        print(
            f"    {event['kind']:<20} down {down:5.1f} s"
            f"  first 2xx after {api:6.2f} s"
            f"  first run completed after {run:6.2f} s"
        )
    steady, outage = report.latency_steady, report.latency_outage
    if steady.get("count") and outage.get("count"):
        print(
            f"  2xx latency steady     median {steady['median'] * 1000:.0f} ms, "
            f"p95 {steady['p95'] * 1000:.0f} ms (baseline)"
        )
        print(
            f"  2xx latency outages    median {outage['median'] * 1000:.0f} ms, "
            f"p95 {outage['p95'] * 1000:.0f} ms "
            f"(x{outage['median'] / steady['median']:.1f} the baseline median)"
        )
    print(f"  runs acknowledged      {report.runs_acknowledged} {report.run_statuses}")
    print(f"  runs re-claimed        {report.runs_requeued} (attempts > 1)")
    print(f"  runs left non-terminal {report.runs_left_active}  (must be 0)")
    print(
        f"  SSE streams            {report.streams_done} ended with [DONE], "
        f"{report.streams_cut} cut"
    )
    print(f"  fsync={report.fsync} synchronous_commit={report.synchronous_commit}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    own_dir = args.data_dir is None
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="agents-restart-"))
    cluster = Cluster(data_dir, workers=args.workers)
    try:
        cluster.start()
        report = drill(
            cluster,
            plan_of(args.restarts, args.kills),
            clients=args.clients,
            down_seconds=args.down_seconds,
            steady_seconds=args.steady_seconds,
            long_down_seconds=args.long_down_seconds or None,
        )
    finally:
        cluster.stop()
        if own_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    show(report, args)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"restart-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args) | {"data_dir": str(data_dir)},
                "report": asdict(report),
            },
            indent=2,
            default=str,
        )
    )
    print(f"  written to {out}")
    ok = report.lost == 0 and report.other_errors == 0 and report.runs_left_active == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
