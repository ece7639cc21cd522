"""Microseconds per request, by Python function, of the real server under load (Linux ``perf``).

    python bench/pyprofile.py --python .matrix/newest/bin/python            # /hello: bare, ours
    python bench/pyprofile.py --python PY --endpoint /db --modes bare,ours,ours-100 --top 40
    python bench/pyprofile.py --python PY --app django --endpoint /db --rounds 2

``bytecodes.py``, ``instructions.py`` and ``servercount.py`` count work; this times it.  The
counts repeat to 0.1% but leave out what the work costs on a real CPU (cache and TLB misses,
branch mispredictions, the kernel's share of a socket write), and on 2026-12-07 they explained
about half of what ``run.py`` measured (bench/README.md, "Run 9" and "Run 10").  Here each server of
``run.py``'s configurations (bare, ours at 10% of traces, ours-100) serves ``wrk`` for
``--seconds`` on its own core while ``perf record`` samples its CPU (1,000 Hz, DWARF call
stacks); every sample is charged to the innermost Python function on its stack (its own
bytecodes and the C code it called: a dict lookup, a socket write and the kernel below it) and
divided by the requests served, which gives microseconds per request, per function, in each
mode and ours minus bare.

Python names in ``perf`` need Python 3.12 or later (``PYTHONPERFSUPPORT=1``, the perf trampoline),
so ``--python`` names an environment of 3.12+ with the benchmark app's requirements and
otel-perf-instrument installed (``.ci/matrix``'s newest environment has both).  The trampoline
is an eval-frame hook, and with one set CPython stops inlining Python-to-Python calls, so every
function runs somewhat slower than without it, code made of many small calls most: compare the
modes of one run (the rounds interleave them), not its figures with ``run.py``'s.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
import run  # noqa: E402

FREQUENCY = 1000  # samples per second of CPU
#: the modes: run.py's configurations, and "ours" with no request sampled
MODES = {"bare": ("bare", {}), "ours": ("ours", {}), "ours-100": ("ours-100", {}),
         "ours-0": ("ours", {"OTEL_TRACES_SAMPLER_ARG": "0"})}  # fmt: skip
#: what a sample with no Python frame is charged to: the kernel, or the native symbol it was in
KERNEL = "[kernel]"
#: the cyclic garbage collector, wherever an allocation happened to trigger it
GC = "[gc] cyclic garbage collection"
_SITE = re.compile(r".*/(?:site|dist)-packages/")
_STDLIB = re.compile(r".*/lib/python3\.\d+/")


def _short(frame: str) -> str:
    """``py::Qual.name:/long/path/pkg/mod.py`` -> ``pkg/mod.py:Qual.name``."""
    name, _, path = frame[len("py::") :].partition(":")
    path = _SITE.sub("", path)
    path = _STDLIB.sub("", path)
    if path.startswith(str(BENCH)):
        path = "bench/" + path[len(str(BENCH)) + 1 :]
    return f"{path}:{name}" if path else name


def charge(script: str) -> tuple[Counter[str], Counter[str]]:
    """Samples per function, and per thread, from ``perf script -F pid,tid,ip,sym`` text.

    A sample is charged to the innermost Python frame of its stack, else the kernel, else
    ``[native] <leaf symbol>``; a sample in the cyclic garbage collector is the collector's,
    not the function whose allocation set it off.  Threads: the process's main thread (the
    event loop, or gunicorn's master) and "other threads" (export, metric reader, watchdog,
    a threadpool's).
    """
    out: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for block in script.split("\n\n"):
        lines = [line for line in block.strip().splitlines() if line.strip()]
        if not lines:
            continue
        head = lines[0].split()
        if len(head) == 1 and "/" in head[0]:  # "pid/tid", then the stack
            pid, _, tid = head[0].partition("/")
            threads["main thread" if pid == tid else "other threads"] += 1
            lines = lines[1:]
        frames = [line.split(None, 1) for line in lines]
        if not frames:
            continue
        where = ""
        for frame in frames:
            symbol = frame[1].strip() if len(frame) > 1 else ""
            if "gc_collect" in symbol:
                where = GC
                break
            if symbol.startswith("py::"):
                where = _short(symbol.split("+0x")[0])
                break
        if not where:
            address = frames[0][0]
            leaf = frames[0][1].split("+0x")[0].strip() if len(frames[0]) > 1 else "?"
            where = KERNEL if address.startswith("ffffffff") else f"[native] {leaf}"
        out[where] += 1
    return out, threads


def group(function: str) -> str:
    """Which part of the process a function belongs to (the summary's rows)."""
    if function == KERNEL:
        return "kernel"
    if function == GC:
        return "garbage collection"
    if function.startswith("[native]"):
        return "native, no Python frame"
    top = function.split("/", 1)[0].split(":", 1)[0]
    if top in ("otel_perf", "opentelemetry"):
        return top
    if top == "bench":
        return "the app"
    return "server, framework, stdlib"


def profile(mode: str, app: str, python: Path, endpoint: str, seconds: float, pin: run.Pinning,
            sink_port: int, workdir: Path, src: str | None, settings: dict[str, str]
            ) -> tuple[Counter[str], Counter[str], int]:  # fmt: skip
    """Samples per function and per thread, and requests served: ``mode`` under ``seconds`` of wrk."""
    config, fixed = MODES[mode]
    extra = {"PYTHONPERFSUPPORT": "1"}
    if mode != "bare":
        extra |= settings | fixed
        if src:
            extra["PYTHONPATH"] = src
    server = run.start_server(app, config, python, pin, sink_port, workdir, extra)
    data = workdir / f"{mode}.perf"
    try:
        run._wait(lambda: run._get(server.base + endpoint), server.proc, f"the {mode} server")
        run.wrk(pin, server.base + endpoint, 2, 16)  # warm-up
        pids = ",".join(str(p) for p in server.pids())
        record = ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(FREQUENCY),
                  "--call-graph", "dwarf,32768", "-o", str(data), "-p", pids]  # fmt: skip
        perf = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        served = int(run.wrk(pin, server.base + endpoint, seconds, 16)["requests"])
        perf.send_signal(2)
        _, err = perf.communicate(timeout=120)
        if perf.returncode not in (0, -2) or not data.exists():
            tail = err.decode(errors="replace")[-500:]
            raise RuntimeError(f"perf record failed ({perf.returncode}): {tail}")
    finally:
        profiled = server.pids()
        server.stop()
    try:
        script = subprocess.run(["perf", "script", "-i", str(data), "-F", "pid,tid,ip,sym", "--no-inline"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
    finally:
        data.unlink(missing_ok=True)
        for pid in profiled:  # the trampoline's symbol maps, read by perf script
            Path(f"/tmp/perf-{pid}.map").unlink(missing_ok=True)
    if served <= 0:
        raise RuntimeError(f"wrk got no answer from the {mode} server in {seconds:g} s")
    samples, threads = charge(script)
    return samples, threads, served


def per_request(samples: Counter[str], served: int) -> dict[str, float]:
    return {k: v * 1e6 / FREQUENCY / served for k, v in samples.items()}


def summary(modes: dict[str, dict[str, float]], threads: dict[str, dict[str, float]]) -> list[str]:
    parts = sorted({group(f) for us in modes.values() for f in us})
    lines = ["| part | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
    for part in [*parts, "total"]:
        cells = [sum(v for f, v in us.items() if part in ("total", group(f))) for us in modes.values()]
        lines.append(f"| {part} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    for thread in ("main thread", "other threads"):
        cells = [threads[m].get(thread, 0.0) for m in modes]
        lines.append(f"| of which in the {thread} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return lines


def differences(bare: dict[str, float], ours: dict[str, float], top: int) -> Iterable[str]:
    rows = sorted(((ours.get(f, 0.0) - bare.get(f, 0.0), f) for f in set(bare) | set(ours)), reverse=True)
    for diff, function in rows[:top]:
        yield f"| {function} | {bare.get(function, 0.0):.2f} | {ours.get(function, 0.0):.2f} | {diff:+.2f} |"


def _python_version(python: Path) -> tuple[int, int]:
    out = subprocess.run([str(python), "-c", "import sys; print(*sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return int(out[0]), int(out[1])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--python",
        type=Path,
        required=True,
        help="Python 3.12+ with the bench app's requirements and otel-perf-instrument",
    )
    p.add_argument("--app", choices=run.ALL_APPS, default="fastapi", help="the benchmark app served")
    p.add_argument("--endpoint", default="/hello", choices=run.ENDPOINTS)
    p.add_argument("--seconds", type=float, default=6.0, help="of load per mode (sampled throughout)")
    p.add_argument("--modes", default="bare,ours", help="comma-separated, of " + ", ".join(MODES))
    p.add_argument("--rounds", type=int, default=1, help="each mode once per round, in turn; summed")
    p.add_argument("--top", type=int, default=30, help="functions listed, by what ours adds")
    p.add_argument("--src", help="a checkout's src/ for the ours runs (PYTHONPATH)")
    p.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                   help="an environment variable for the ours runs (price one setting)")  # fmt: skip
    args = p.parse_args(argv)
    if any("=" not in kv for kv in args.set):
        p.error("--set takes VAR=VALUE")
    settings = dict(kv.split("=", 1) for kv in args.set)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes) or args.seconds <= 0 or args.rounds < 1:
        p.error(f"bad --modes {args.modes!r} ({', '.join(MODES)}), --seconds or --rounds")
    problem = ""
    if shutil.which("perf") is None:
        problem = "Linux perf is not installed (Debian: apt-get install linux-perf)"
    elif shutil.which("wrk") is None:
        problem = "wrk is not installed (Debian: apt-get install wrk)"
    elif not args.python.exists():
        problem = f"--python {args.python} does not exist"
    elif (version := _python_version(args.python)) < (3, 12):
        problem = (
            f"--python {args.python} is Python {version[0]}.{version[1]}; perf "
            "sees Python functions from 3.12 on: pass a 3.12+ environment with the bench app's "
            "requirements and otel-perf-instrument (e.g. .matrix/newest/bin/python after .ci/matrix)"
        )
    if problem:
        print(f"bench/pyprofile.py: {problem}", file=sys.stderr)
        return 2
    pin = run.Pinning(True)
    samples: dict[str, Counter[str]] = {m: Counter() for m in modes}
    threads: dict[str, Counter[str]] = {m: Counter() for m in modes}
    served: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="pyprofile-") as tmp, run.sink(pin) as sink_port:
        for n in range(args.rounds):
            for mode in modes:  # in turn, so a slow spell of the machine falls on every mode
                got, on, count = profile(mode, args.app, args.python, args.endpoint, args.seconds, pin,
                                         sink_port, Path(tmp), args.src, settings)  # fmt: skip
                samples[mode] += got
                threads[mode] += on
                served[mode] += count
                cpu = sum(got.values()) * 1e6 / FREQUENCY / count
                print(f"round {n + 1}, {mode}: {count:,} requests, {cpu:.1f} us of CPU each", flush=True)
    per = {m: per_request(samples[m], served[m]) for m in modes}
    per_thread = {m: per_request(threads[m], served[m]) for m in modes}
    print(f"\n{args.app} {args.endpoint}: microseconds of CPU per request, by part ({pin.describe()})\n")
    print("\n".join(summary(per, per_thread)))
    if all(m in per for m in ("bare", "ours", "ours-0", "ours-100")):
        total = {m: sum(us.values()) for m, us in per.items()}
        linear = total["ours-0"] + 0.1 * (total["ours-100"] - total["ours-0"])
        print(
            f"\nours (10% sampled) adds {total['ours'] - total['bare']:.1f} us to a request; from ours-0 and "
            f"ours-100 a tenth of the sampled cost would make it {linear - total['bare']:.1f}"
        )
    bare = per.get("bare")
    for mode in (m for m in modes if m != "bare" and bare is not None):
        print(f"\n{mode} minus bare, top {args.top} functions (us per request)\n")
        print("| function | bare | " + mode + " | + |\n|---|---|---|---|")
        print("\n".join(differences(bare, per[mode], args.top)))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    os.environ.pop("PYTHONPERFSUPPORT", None)  # the servers get it; this process does not need it
    raise SystemExit(main())
