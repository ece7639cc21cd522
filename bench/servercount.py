"""Instructions, and estimated CPU cycles, per request of the real server under callgrind.

    python bench/servercount.py                       # /hello: bare, ours unsampled, ours sampled
    python bench/servercount.py --cache-sim           # + simulated cache and branch misses
    python bench/servercount.py --endpoint /db --requests 300
    python bench/servercount.py --modes ours --set OTEL_PERF_TRACERESPONSE=false   # price a setting

``instructions.py`` counts one request through the app's ASGI stack in-process; this counts the
whole server process: uvicorn, uvloop, httptools, the app, ours, and every thread, for
``--requests`` keep-alive requests sent one at a time from this process.  The server runs under
``valgrind --tool=callgrind``; ``callgrind_control --zero`` before the counted requests and
``--dump`` after them delimit the count (start-up, warm-up and exit are not in it).  Work paid
per second rather than per request (the metric export, the loop monitor's ticks, the process
metrics) is switched off or pushed past the run: callgrind runs the server about 50 times slower,
which would charge each request 50 times its share of it.  Spans leave in full batches of 100
(no export timer); with every request sampled the count starts once the warm-up's batches are
exported and ends once the counted requests' are, so it includes the encoding and the export
of as many spans as the counted requests made, give or take one batch.

With ``--cache-sim`` callgrind also simulates the caches and branch predictors, and the table
adds KCachegrind's cycle estimate, ``Ir + 10 x (L1 misses + mispredicted branches) + 100 x LL
misses``: whether what ours adds misses more per instruction than the app around it (on
2026-12-07 it did not; bench/README.md, "Run 9").
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
import inproc  # noqa: E402
import run  # noqa: E402

#: as instructions.py: production settings, the request not sampled / every request sampled
MODES = {
    "bare": {},
    "ours": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"},
    "ours-100": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.0"},
}
#: per-second work off, or past the run (see the docstring)
QUIET = {
    "OTEL_METRIC_EXPORT_INTERVAL": "3600000",
    "OTEL_PERF_LOOP_MONITOR": "false",
    "OTEL_PERF_SYSTEM_METRICS": "false",
    "OTEL_PERF_LOG_FORMAT": "off",
    # Spans leave in full batches only (no timer): ours-100's counted part includes the export
    # of as many spans as its requests made, give or take one batch.
    "OTEL_BSP_SCHEDULE_DELAY": "3600000",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100",
}
EVENTS_CACHE = ("I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw", "Bcm", "Bim")


def _requests(port: int, path: str, n: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(n):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path} answered {response.status}")
    finally:
        conn.close()


def _trace_posts() -> int:
    import sink  # the in-process sink inproc.start_sink() serves

    return sink._counts.get("traces", [0, 0])[0]


def _settle(seconds: float = 3.0, limit: float = 120.0) -> None:
    """Until the sink has had no new trace export for ``seconds`` (callgrind makes exports slow)."""
    deadline = time.monotonic() + limit
    last, since = _trace_posts(), time.monotonic()
    while time.monotonic() - since < seconds and time.monotonic() < deadline:
        time.sleep(0.5)
        now = _trace_posts()
        if now != last:
            last, since = now, time.monotonic()


def count(
    mode: str,
    path: str,
    requests: int,
    warmup: int,
    cache_sim: bool,
    src: str | None,
    settings: dict[str, str] | None = None,
) -> dict[str, int]:
    """Event totals of ``requests`` counted requests in one server run under callgrind."""
    bindir = Path(sys.executable).parent
    port = run.free_port()
    out = tempfile.mkdtemp(prefix="servercount-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTHON"))}
    env["BENCH_DB"] = os.path.join(out, "bench.db")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONHASHSEED"] = "0"  # as instructions.py: the same dict layouts every run
    launcher: list[str] = []
    if mode != "bare":
        env |= (
            QUIET
            | MODES[mode]
            | {"OTEL_SERVICE_NAME": "servercount", "OTEL_EXPORTER_OTLP_ENDPOINT": inproc.start_sink()}
            | (settings or {})
        )
        if src:
            env["PYTHONPATH"] = src
        launcher = [str(bindir / "otel-perf-instrument")]
    options = ["--cache-sim=yes", "--branch-sim=yes"] if cache_sim else []
    serve = [str(bindir / "uvicorn"), "--app-dir", str(BENCH), "app:app", "--host", "127.0.0.1",
             "--port", str(port), "--no-access-log", "--log-level", "warning"]  # fmt: skip
    cmd = ["valgrind", "--tool=callgrind", *options, "--trace-children=yes",
           f"--callgrind-out-file={out}/cg.%p", *launcher, *serve]  # fmt: skip
    log_path = os.path.join(out, "server.log")
    log = open(log_path, "wb")  # noqa: SIM115 (closed below, after the server)
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            run._wait(lambda: _requests(port, path, 1), server, f"the {mode} server", timeout=300)
        except RuntimeError as exc:
            tail = Path(log_path).read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{exc}; its output:\n{tail}") from None
        _requests(port, path, warmup)
        if mode == "ours-100":
            _settle()  # the warm-up's full batches exported before the count starts
        pid = str(server.pid)
        subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True, timeout=120)
        _requests(port, path, requests)
        if mode == "ours-100":
            _settle()  # and the counted requests' full batches inside it
        dump = ["callgrind_control", "--dump=counted", pid]
        subprocess.run(dump, check=True, capture_output=True, timeout=120)
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
        log.close()
    dumps = [
        p
        for p in Path(out).iterdir()
        if p.name.startswith("cg.") and "counted" in p.read_text(errors="replace")[:2000]
    ]
    if len(dumps) != 1:
        raise RuntimeError(f"expected one counted dump in {out}, found {len(dumps)}")
    text = dumps[0].read_text(errors="replace")
    events = next(line.split()[1:] for line in text.splitlines() if line.startswith("events:"))
    totals = next(line.split()[1:] for line in text.splitlines() if line.startswith(("summary:", "totals:")))
    shutil.rmtree(out, ignore_errors=True)
    return dict(zip(events, (int(t) for t in totals), strict=False))


def cycles(e: dict[str, int]) -> int:
    """KCachegrind's estimate: Ir + 10 (L1 misses + mispredicted branches) + 100 LL misses."""
    l1 = e.get("I1mr", 0) + e.get("D1mr", 0) + e.get("D1mw", 0)
    ll = e.get("ILmr", 0) + e.get("DLmr", 0) + e.get("DLmw", 0)
    return e["Ir"] + 10 * (l1 + e.get("Bcm", 0) + e.get("Bim", 0)) + 100 * ll


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", default="/hello", choices=("/hello", "/items/42", "/db"))
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--cache-sim", action="store_true", help="also simulate caches and branches (slower)")
    p.add_argument("--src", help="a checkout's src/ for the ours runs (PYTHONPATH)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES))
    p.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                   help="a variable for the ours runs (repeatable), to price a feature")  # fmt: skip
    args = p.parse_args(argv)
    if any("=" not in kv for kv in args.set):
        p.error("--set takes VAR=VALUE")
    settings = dict(kv.split("=", 1) for kv in args.set)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print(
            "bench/servercount.py: valgrind is not installed (Debian: apt-get install valgrind)",
            file=sys.stderr,
        )
        return 2
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown or args.requests < 1 or args.warmup < 0:
        p.error(f"bad --modes {unknown} or --requests/--warmup")
    per = {
        m: count(m, args.endpoint, args.requests, args.warmup, args.cache_sim, args.src, settings)
        for m in modes
    }
    print(f"{args.endpoint}: per request ({args.requests} counted, whole server process, all threads)")
    head = "| mode | instructions |" + (
        " est. cycles | L1 misses | LL misses | mispredicted |" if args.cache_sim else ""
    )
    print(head)
    print("|---|---|" + ("---|---|---|---|" if args.cache_sim else ""))
    base = per.get("bare")
    for m, e in per.items():
        n = args.requests
        ir = e["Ir"] / n
        row = (
            f"| {m} | {ir:,.0f}"
            + (f" ({ir / (base['Ir'] / n) - 1:+.1%})" if base and m != "bare" else "")
            + " |"
        )
        if args.cache_sim:
            est = cycles(e) / n
            row += f" {est:,.0f}" + (
                f" ({est / (cycles(base) / n) - 1:+.1%})" if base and m != "bare" else ""
            )
            got = {k: e.get(k, 0) / n for k in EVENTS_CACHE}
            l1, ll = got["I1mr"] + got["D1mr"] + got["D1mw"], got["ILmr"] + got["DLmr"] + got["DLmw"]
            row += f" | {l1:,.0f} | {ll:,.0f}"
            row += f" | {got['Bcm'] + got['Bim']:,.0f} |"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
