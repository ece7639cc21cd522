"""Soak: 100 concurrent users for 10 minutes against the demo app under the launcher.

    python bench/soak.py                          # 100 connections, 600 s (the issue's figures)
    python bench/soak.py --users 20 --duration 60 # a quick look

The demo app (``otel_perf._demo.app``, uvicorn, one worker, pinned to core 0) runs under
``otel-perf-instrument`` with default settings, exporting every signal to a healthy OTLP
sink (``bench/faults.py sink``, core 1, accepts everything without decoding).  ``wrk``
(core 1) keeps ``--users`` connections busy with the demo's healthy routes -- no think
time, so the server is saturated the whole time -- for ``--duration`` seconds.

It reports, and writes as JSON with ``--json``:

* failed requests (connect/read/write errors, timeouts, non-2xx/3xx answers) -- all of
  them, so "zero caused by instrumentation" is checked, not assumed;
* the server's RSS every ``--sample`` seconds: after warm-up, at the end, the peak, and the
  growth rate over the second half (MB per minute), which is what a leak would show;
* the self-telemetry at the end (stats endpoint): items exported, dropped and failed per
  signal, and the largest export queue seen;
* requests the stats endpoint counted against requests ``wrk`` completed (each request is
  measured exactly once).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_spec = importlib.util.spec_from_file_location("bench_faults", Path(__file__).with_name("faults.py"))
assert _spec is not None
assert _spec.loader is not None
faults: Any = importlib.util.module_from_spec(_spec)
sys.modules["bench_faults"] = faults  # dataclasses look their module up while it loads
_spec.loader.exec_module(faults)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=100, help="concurrent connections (users without think time)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    p.add_argument("--warmup", type=float, default=30.0, help="seconds of load before measuring")
    p.add_argument("--sample", type=float, default=5.0, help="seconds between RSS / queue samples")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="otel-perf-soak-"))
    script = faults.write_mix(folder)
    with faults.sink("healthy") as endpoint:
        app = faults.start_app(endpoint, workdir=folder)
        try:
            faults.run_wrk(app.base, script, args.warmup, args.users)
            faults.post(app.base + "/_perf/reset", faults.TOKEN)  # count from here on
            # (t, RSS MB, span queue, log queue, 1-minute load average of the machine)
            samples: list[tuple[float, float, float, float, float]] = []
            stop = threading.Event()

            def sample() -> None:
                start = time.monotonic()
                while not stop.is_set():
                    telemetry = app.stats()["telemetry"]
                    samples.append(
                        (
                            time.monotonic() - start,
                            faults.rss_mb(app.proc.pid),
                            telemetry["traces"]["queue_size"],
                            telemetry["logs"]["queue_size"],
                            os.getloadavg()[0],
                        )
                    )
                    stop.wait(args.sample)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            cpu_before = faults.cpu_seconds(app.proc.pid)
            load = faults.run_wrk(app.base, script, args.duration, args.users, threads=2)
            cpu = faults.cpu_seconds(app.proc.pid) - cpu_before
            stop.set()
            sampler.join()
            time.sleep(6)  # one more span/log export (schedule delay 5 s) before reading the totals
            stats = app.stats()
        finally:
            exit_s = app.stop()
    result = _summarize(args, load, cpu, samples, stats, exit_s)
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["failed_requests"] == 0 and result["telemetry_dropped"] == 0 else 1


def _summarize(
    args: argparse.Namespace,
    load: dict[str, Any],
    cpu: float,
    samples: list[tuple[float, ...]],
    stats: dict[str, Any],
    exit_s: float,
) -> dict[str, Any]:
    times = [s[0] for s in samples]
    rss = [s[1] for s in samples]
    half = [(t, r) for t, r in zip(times, rss, strict=True) if t >= times[-1] / 2]
    slope = _slope(half) * 60 if len(half) >= 2 else 0.0
    counted = sum(e["count"] for e in stats["endpoints"])
    telemetry = stats["telemetry"]
    return {
        "users": args.users,
        "duration_s": args.duration,
        "requests": load["requests"],
        "requests_per_s": round(load["rps"], 1),
        "cpu_us_per_request": round(cpu / max(load["requests"], 1) * 1e6, 1),
        "p50_ms": load["p50_us"] / 1000,
        "p99_ms": load["p99_us"] / 1000,
        "max_ms": load["max_us"] / 1000,
        "failed_requests": load["failed"],
        "failures": {
            k: load[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        },
        "requests_counted_by_stats": counted,
        "rss_mb": {
            "after_warmup": round(rss[0], 1),
            "end": round(rss[-1], 1),
            "peak": round(max(rss), 1),
            "median": round(statistics.median(rss), 1),
            "growth": round(rss[-1] - rss[0], 1),
            "growth_per_min_second_half": round(slope, 3),
        },
        "max_queue": {"traces": max(s[2] for s in samples), "logs": max(s[3] for s in samples)},
        "load_average": {
            "median": round(statistics.median(s[4] for s in samples), 2),
            "max": round(max(s[4] for s in samples), 2),
        },
        "telemetry": telemetry,
        "telemetry_dropped": sum(v.get("dropped", 0) for v in telemetry.values()),
        "telemetry_export_failures": sum(v.get("export_failures", 0) for v in telemetry.values()),
        "exit_s": round(exit_s, 2),
        "samples": [
            {"t": round(s[0], 1), "rss_mb": round(s[1], 2), "span_queue": s[2], "load": s[4]} for s in samples
        ],
        "status": stats.get("status"),
    }


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per second)."""
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return sum((t - mx) * (v - my) for t, v in points) / var if var else 0.0


def _print(r: dict[str, Any]) -> None:
    rss = r["rss_mb"]
    print(
        f"soak: {r['users']} users, {r['duration_s']:.0f} s, {r['requests']} requests "
        f"({r['requests_per_s']} req/s, {r['cpu_us_per_request']} µs CPU/request), "
        f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.0f} ms"
    )
    print(f"failed requests: {r['failed_requests']} {r['failures']}")
    print(
        f"requests counted by the stats endpoint: {r['requests_counted_by_stats']} "
        f"(wrk completed {r['requests']})"
    )
    print(
        f"RSS MB: after warm-up {rss['after_warmup']}, end {rss['end']}, peak {rss['peak']}, "
        f"growth {rss['growth']}, "
        f"second-half trend {rss['growth_per_min_second_half']} MB/min"
    )
    print(f"export queues, largest seen: {r['max_queue']}; machine load average {r['load_average']}")
    for signal, t in r["telemetry"].items():
        print(
            f"telemetry {signal}: exported {t['exported']:.0f}, dropped {t['dropped']:.0f}, "
            f"export failures {t['export_failures']:.0f}"
        )
    print(f"exit after SIGTERM: {r['exit_s']} s; health status: {r['status']}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
