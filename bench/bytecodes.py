"""Bytecodes per request: the instrumentation's cost in a unit that does not drift.

    python bench/bytecodes.py                      # /hello, /items/42, /db; 300 requests each
    python bench/bytecodes.py --endpoints /db --top 25
    python bench/bytecodes.py --set OTEL_PERF_TRACERESPONSE=false   # price one feature
    python bench/bytecodes.py --app django                            # djbench/ (WSGI), or flask

Requests/s on this kind of machine move by 2-5% between runs, so a change worth 1% cannot
be seen there.  This counts instead the Python bytecodes the interpreter executes for one
request (``sys.settrace`` with opcode events), by function, in three fresh processes:

* ``bare``: ``bench/app.py`` alone;
* ``ours``: bootstrapped as the launcher does with the README's production settings, the
  request not sampled (what 90% of requests cost at 10% sampling);
* ``ours-100``: the same with every request sampled (spans started, ended, encoded).

A request is one call through the whole ASGI stack, no socket, one at a time, after a
warm-up; the event-loop thread and the threadpool threads that run ``/db`` are counted,
the export threads are not (``bench/test_hotpath.py`` measures export per span).  The
count repeats to within 0.1% from run to run.  A bytecode is not a fixed time (a C call
behind one can take microseconds), so this tells *where* work is added and whether a change
removed some; ``bench/run.py`` tells what it costs in throughput.  ``--set VAR=VALUE``
prices one setting (it applies to both "ours" runs).

The event-loop monitor is off here: it works per second (20 ticks), not per request, and
tracing makes a request about 20 times slower, which would charge each request 20 times its
share; and its pending timer would make every loop iteration check the timer heap, which
in a real server the keep-alive timers of idle connections make the bare app do anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # app.py, sink.py and inproc.py live beside this file
    sys.path.insert(0, str(BENCH))
import inproc  # noqa: E402

ENDPOINTS = ("/hello", "/items/42", "/db")
MODES = {
    "bare": "the app alone",
    "ours": "otel-perf-instrument, production settings, request not sampled",
    "ours-100": "otel-perf-instrument, request sampled (spans started, ended, encoded)",
}
#: Threads whose bytecodes are a request's: the event loop's and the threadpool's.
_REQUEST_THREADS = ("MainThread", "AnyIO worker thread")


class OpcodeCounter:
    """Counts executed bytecodes per function while ``on`` is set (request threads only)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.on = False
        self._names: dict[Any, str] = {}
        self._local = threading.local()

    def _name(self, frame: FrameType) -> str:
        code = frame.f_code
        name = self._names.get(code)
        if name is None:
            path = code.co_filename.replace("\\", "/")
            for marker in ("/site-packages/", "/src/", "/lib/python"):
                if marker in path:
                    path = path.split(marker, 1)[1]
                    if marker == "/lib/python":
                        path = "(stdlib) " + path.split("/", 1)[-1]
                    break
            qualname = getattr(code, "co_qualname", code.co_name)
            name = self._names[code] = f"{path}:{qualname}"
        return name

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if not self.on:
            return None
        counted = getattr(self._local, "counted", None)
        if counted is None:
            counted = self._local.counted = threading.current_thread().name.startswith(_REQUEST_THREADS)
        if not counted:
            return None
        frame.f_trace_opcodes = True
        name = self._name(frame)
        counts = self.counts

        def local(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[name] += 1
            return local

        return local

    def start(self) -> None:
        self.on = True
        sys.settrace(self.trace)

    def stop(self) -> None:
        sys.settrace(None)
        self.on = False


def child(
    mode: str, endpoints: Sequence[str], requests: int, warmup: int, app_name: str = "fastapi"
) -> dict[str, Any]:
    """Run in a fresh process: per endpoint, bytecodes per request by function."""
    counter = OpcodeCounter()
    threading.settrace(counter.trace)  # threads started from now on (the threadpool's)
    tmp = tempfile.mkdtemp(prefix="otel-perf-bytecodes-")
    os.environ["BENCH_DB"] = os.path.join(tmp, "bench.db")
    if mode != "bare":
        inproc.bootstrap_ours(mode)
    target, is_asgi = inproc.load_app(app_name)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def one(path: str) -> None:
        if is_asgi:
            loop.run_until_complete(inproc.call(target, path))
        else:
            inproc.wsgi_call(target, path)

    out: dict[str, Any] = {}
    for path in endpoints:
        for _ in range(warmup):
            one(path)
        counter.counts.clear()
        counter.start()
        try:
            for _ in range(requests):
                one(path)
        finally:
            counter.stop()
        out[path] = {name: n / requests for name, n in counter.counts.items()}
    loop.close()
    return out


def _package(name: str) -> str:
    path = name.split(":", 1)[0]
    if path.startswith("(stdlib)"):
        return "stdlib " + path.split()[1].split("/")[0].removesuffix(".py")
    return path.split("/")[0].removesuffix(".py")


def render(results: dict[str, dict[str, dict[str, float]]], top: int, requests: int) -> str:
    endpoints = list(next(iter(results.values())))
    lines = [
        f"Bytecodes executed per request ({requests} requests each, one at a time, after warm-up; "
        "event-loop and threadpool threads)",
        "",
        "| endpoint | bare | ours | + over bare | ours-100 | + over bare | ours at 10% (expected) |",
        "|---|---|---|---|---|---|---|",
    ]
    totals = {m: {e: sum(results[m][e].values()) for e in endpoints} for m in results}
    for e in endpoints:
        bare, ours, full = totals["bare"][e], totals["ours"][e], totals["ours-100"][e]
        at10 = ours + 0.1 * (full - ours)
        lines.append(
            f"| {e} | {bare:,.0f} | {ours:,.0f} | +{ours - bare:,.0f} ({(ours - bare) / bare:+.1%}) "
            f"| {full:,.0f} | +{full - bare:,.0f} ({(full - bare) / bare:+.1%}) "
            f"| +{at10 - bare:,.0f} ({(at10 - bare) / bare:+.1%}) |"
        )
    for e in endpoints:
        for mode in ("ours", "ours-100"):
            diff = Counter(results[mode][e])
            diff.subtract(results["bare"][e])
            by_package: Counter[str] = Counter()
            for name, n in diff.items():
                by_package[_package(name)] += n
            lines += ["", f"{mode} {e}: added per request, by package: " + ", ".join(
                f"{p} {n:+,.0f}" for p, n in by_package.most_common() if abs(n) >= 1
            )]  # fmt: skip
            lines.append(f"  top {top} functions ({mode} minus bare):")
            for name, n in sorted(diff.items(), key=lambda kv: -kv[1])[:top]:
                if n >= 1:
                    lines.append(f"  {n:8,.0f}  {name}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="bytecodes per request, bare vs ours (see bench/README.md)")
    p.add_argument("--endpoints", default=",".join(ENDPOINTS), help="comma-separated subset of the default")
    p.add_argument("--requests", type=int, default=300, help="counted requests per endpoint")
    p.add_argument("--warmup", type=int, default=200, help="uncounted requests per endpoint first")
    p.add_argument("--top", type=int, default=15, help="functions listed per endpoint and mode")
    p.add_argument("--json", type=Path, help="also write the per-function counts here")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="a variable for both ours runs (repeatable), to price a feature: OTEL_PERF_TRACERESPONSE=false",
    )
    p.add_argument(
        "--app",
        choices=("fastapi", "django", "flask"),
        default="fastapi",
        help="app.py (FastAPI, ASGI), djbench/ (Django, WSGI) or flask_bench.py (Flask, WSGI)",
    )
    p.add_argument("--child", choices=sorted(MODES), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for item in args.set:
        name, sep, _ = item.partition("=")
        if not sep or not name.strip():
            p.error(f"--set {item!r}: expected VAR=VALUE")
    # app.py's scaling endpoint too: /stmts/<n> runs n statements per request.
    unknown = [
        e
        for e in args.endpoints.split(",")
        if e not in ENDPOINTS and not (args.app == "fastapi" and re.fullmatch(r"/stmts/\d+", e))
    ]
    if unknown:
        p.error(
            f"--endpoints: unknown {', '.join(unknown)} (choose from {', '.join(ENDPOINTS)}, "
            "or /stmts/<n> on fastapi)"
        )
    if args.requests < 1 or args.warmup < 0:
        p.error("--requests must be at least 1 and --warmup at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    endpoints = args.endpoints.split(",")
    if args.child:
        json.dump(child(args.child, endpoints, args.requests, args.warmup, args.app), sys.stdout)
        return 0
    results: dict[str, Any] = {}
    for mode, what in MODES.items():
        print(f"counting {mode}: {what}", file=sys.stderr, flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        if mode != "bare":
            env.update(item.split("=", 1) for item in args.set)
        proc = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--endpoints", args.endpoints,
             "--requests", str(args.requests), "--warmup", str(args.warmup), "--app", args.app],
            capture_output=True, text=True, env=env, timeout=900, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            print(f"bench/bytecodes.py: the {mode} run failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        results[mode] = json.loads(proc.stdout)
    if args.app != "fastapi":
        print(f"app: {args.app} (WSGI, in process)")
    if args.set:
        print("ours runs with " + " ".join(args.set))
    print(render(results, args.top, args.requests))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
