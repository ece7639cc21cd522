"""Machine instructions per request under callgrind: the instrumentation's whole cost, C included.

    python bench/instructions.py                          # /hello, /items/42, /db
    python bench/instructions.py --endpoints /hello --variant pre=/tmp/pre/src
    python bench/instructions.py --set OTEL_PERF_TRACERESPONSE=false

``bytecodes.py`` counts Python bytecodes, which do not see what a bytecode costs in C (a dict
built, a lock taken, bytes encoded), and timings on a shared 2-core machine scatter by tens of
percent (a plain loop of additions took 203 to 363 ms in six runs on 2026-12-06).  This counts
the instructions the CPU executes (``valgrind --tool=callgrind``), whatever else the machine is
doing: a trivial request's count repeats to within about 2,500 of its 440,000 instructions, sampled
or not (bench/README.md, "Run 8"), so compare versions in one run, repeat it, and trust only
differences every run agrees on.  ``/db`` scatters more, by up to 100,000 of its 3.9 million (the
threadpool hand-off), more than an unsampled request adds there: use it for large differences.

Each mode (``bare``, ``ours`` = production settings with the request not sampled, ``ours-100`` =
every request sampled, spans encoded and exported) runs in a fresh process under callgrind: the
warm-up, then ``--requests`` counted requests between two marks (callgrind dumps its counters
where ``os_getppid`` is entered), so start-up, warm-up and exit are not counted at all.  Counting
only between marks matters: start-up's own count varies from run to run by more than a request
costs (the type cache's misses move with thread timing), which a difference of two runs of
different lengths cannot cancel.  The warm-up's spans are exported before the first mark and the
counted requests' spans before the second (``force_flush``), so a sampled request pays for its
own export and nothing else's.
Spans go to an OTLP sink in this (unmeasured) process.  All threads count: the request's, the
threadpool's for ``/db`` and the span exporter's.  ``--variant NAME=SRC`` adds ``ours`` and
``ours-100`` for another checkout's ``src`` (put first on ``PYTHONPATH``), to compare two
versions of the code in one run.

callgrind runs a process about 50 times slower; the default counts take a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # app.py, sink.py and inproc.py live beside this file
    sys.path.insert(0, str(BENCH))
import inproc  # noqa: E402

ENDPOINTS = ("/hello", "/items/42", "/db")
#: Counted requests per run, per endpoint; /db is about eight times the instructions of /hello.
DEFAULT_REQUESTS = {"/hello": 400, "/items/42": 400, "/db": 160}
_SUMMARY = re.compile(r"^summary: (\d+)", re.MULTILINE)
#: The function whose entry marks the counted part's start and end (``child``).
MARK = "os_getppid"


def child(mode: str, endpoint: str, requests: int, warmup: int, app_name: str) -> None:
    """One measured process: bootstrap (unless bare), warm up, run the counted requests, exit.

    ``os.getppid()`` marks where the counted part starts and ends: callgrind dumps its counters
    when that function is entered (``--dump-before``), and nothing else here calls it.
    """
    # Threads switch when they block, never on a timer: the interpreter's 5 ms switch interval
    # is wall-clock time, which callgrind stretches by a varying factor.
    sys.setswitchinterval(3600)
    os.environ["BENCH_DB"] = os.path.join(tempfile.mkdtemp(prefix="otel-perf-instructions-"), "bench.db")
    if mode != "bare":
        inproc.bootstrap_ours(mode)
    target, is_asgi = inproc.load_app(app_name)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def one() -> None:
        if is_asgi:
            loop.run_until_complete(inproc.call(target, endpoint))
        else:
            inproc.wsgi_call(target, endpoint)

    for _ in range(warmup):
        one()
    if mode != "bare":  # the warm-up's spans are exported now, not inside the counted part
        flush_spans()
    os.getppid()  # the counted part starts
    for _ in range(requests):
        one()
    if mode != "bare":  # the counted requests' spans still queued are exported now, and counted
        flush_spans()
    os.getppid()  # and ends
    loop.close()


def flush_spans() -> None:
    """Export the spans queued so far (their HTTP call included)."""
    from opentelemetry import trace

    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]


def _count(argv: list[str], env: dict[str, str]) -> int:
    """Instructions of the counted part of one child run (callgrind's second dump)."""
    with tempfile.TemporaryDirectory(prefix="otel-perf-callgrind-") as out:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--dump-before={MARK}", f"--callgrind-out-file={out}/cg",
             *argv],
            capture_output=True, text=True, env=env, timeout=1800, check=False,
        )  # fmt: skip
        parts = sorted(Path(out).glob("cg.*"))
        if proc.returncode != 0 or [p.name for p in parts] != ["cg.1", "cg.2"]:
            raise RuntimeError(
                f"callgrind run failed or did not mark its counted part ({' '.join(argv[-8:])}; "
                f"dumps {[p.name for p in parts]}, expected cg.1 and cg.2):\n{proc.stderr[-3000:]}"
            )
        found = _SUMMARY.search(Path(out, "cg.2").read_text())
    if found is None:
        raise RuntimeError(f"callgrind's dump of the counted part has no summary ({' '.join(argv[-8:])})")
    return int(found.group(1))


def measure(
    runs: dict[str, tuple[str, str | None]],
    endpoints: Sequence[str],
    requests: dict[str, int],
    warmup: int,
    app_name: str,
    settings: Sequence[str],
    jobs: int,
) -> dict[str, dict[str, float]]:
    """Instructions per request for each run name (mode, extra PYTHONPATH) and endpoint."""
    sink = inproc.start_sink()
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    base["PYTHONHASHSEED"] = "0"  # the same dict layouts in every process

    def one(name: str, endpoint: str, n: int) -> int:
        mode, src = runs[name]
        env = dict(base)
        if mode != "bare":
            env.update(item.split("=", 1) for item in settings)
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink
            # Nothing periodic may run in the counted part (its share would depend on timing).
            env.setdefault("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
            env.setdefault("OTEL_PERF_SYSTEM_METRICS", "false")
            # Spans are exported when a batch is full and at the marks (child), not on a timer.
            env.setdefault("OTEL_BSP_SCHEDULE_DELAY", "3600000")
        if src:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        argv = [sys.executable, __file__, "--child", mode, "--endpoints", endpoint,
                "--requests", str(n), "--warmup", str(warmup), "--app", app_name]  # fmt: skip
        return _count(argv, env)

    tasks = [(name, e) for name in runs for e in endpoints]
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        counts = dict(zip(tasks, pool.map(lambda t: one(t[0], t[1], requests[t[1]]), tasks), strict=True))
    return {name: {e: counts[(name, e)] / requests[e] for e in endpoints} for name in runs}


def render(per: dict[str, dict[str, float]], runs: dict[str, tuple[str, str | None]]) -> str:
    lines = [
        "Instructions per request (valgrind --tool=callgrind; all threads; the counted requests only)",
        "",
        "| run | " + " | ".join(per["bare"]) + " |",
        "|---|" + "---|" * len(per["bare"]),
    ]
    for name in runs:
        cells = []
        for e, n in per[name].items():
            bare = per["bare"][e]
            added = "" if name == "bare" else f" (+{n - bare:,.0f}, {(n - bare) / bare:+.1%})"
            cells.append(f"{n:,.0f}{added}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    at10 = [name for name in runs if runs[name][0] == "ours" and f"{name}-100" in runs]
    if at10:
        lines += ["", "At 10% sampling (expected: unsampled + 0.1 x (sampled - unsampled)), over bare:"]
        for name in at10:
            cells = []
            for e in per["bare"]:
                mixed = per[name][e] + 0.1 * (per[f"{name}-100"][e] - per[name][e])
                cells.append(f"{e} +{mixed - per['bare'][e]:,.0f}")
            lines.append(f"  {name}: " + ", ".join(cells))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="instructions per request under callgrind, bare vs ours")
    p.add_argument("--endpoints", default=",".join(ENDPOINTS), help="comma-separated subset of the default")
    p.add_argument("--requests", type=int, help="counted requests per run (default 400, /db 160)")
    p.add_argument("--warmup", type=int, default=200, help="uncounted requests first, in every run")
    p.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                   help="a variable for every ours run (repeatable)")  # fmt: skip
    p.add_argument("--variant", action="append", default=[], metavar="NAME=SRC",
                   help="also ours and ours-100 with SRC (a checkout's src/) on PYTHONPATH")  # fmt: skip
    p.add_argument("--app", choices=("fastapi", "django", "flask"), default="fastapi")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="callgrind runs at a time")
    p.add_argument("--child", choices=("bare", "ours", "ours-100"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for item in [*args.set, *args.variant]:
        name, sep, _ = item.partition("=")
        if not sep or not name.strip():
            p.error(f"{item!r}: expected NAME=VALUE")
    for item in args.variant:  # a variable may be set empty, a variant needs its tree
        src = item.partition("=")[2]
        if not Path(src or "/nonexistent", "otel_perf").is_dir():
            p.error(f"--variant {item}: no {src}/otel_perf directory")
    unknown = [e for e in args.endpoints.split(",") if e not in ENDPOINTS]
    if unknown:
        p.error(f"--endpoints: unknown {', '.join(unknown)} (choose from {', '.join(ENDPOINTS)})")
    if (args.requests is not None and args.requests < 1) or args.warmup < 0:
        p.error("--requests must be at least 1 and --warmup at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    endpoints = args.endpoints.split(",")
    if args.child:
        child(args.child, endpoints[0], args.requests, args.warmup, args.app)
        return 0
    if shutil.which("valgrind") is None:
        print("bench/instructions.py: valgrind is not installed (Debian: apt-get install valgrind)",
              file=sys.stderr)  # fmt: skip
        return 2
    runs: dict[str, tuple[str, str | None]] = {mode: (mode, None) for mode in ("bare", "ours", "ours-100")}
    for item in args.variant:
        name, _, src = item.partition("=")
        runs[name] = ("ours", src)
        runs[f"{name}-100"] = ("ours-100", src)
    requests = {e: args.requests or DEFAULT_REQUESTS[e] for e in endpoints}
    try:
        per = measure(runs, endpoints, requests, args.warmup, args.app, args.set, args.jobs)
    except RuntimeError as exc:
        print(f"bench/instructions.py: {exc}", file=sys.stderr)
        return 1
    if args.set:
        print("ours runs with " + " ".join(args.set))
    print(render(per, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
