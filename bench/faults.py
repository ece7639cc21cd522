"""App latency and throughput while the OTLP backend misbehaves (a benchmark, not a test).

    python bench/faults.py                     # all modes, 2 interleaved rounds, 20 s of load each
    python bench/faults.py --duration 5 --rounds 1 --modes healthy,stall   # quick look

For every backend mode -- ``healthy`` (answers 200), ``refused`` (nothing listens),
``stall`` (accepts, reads, never answers), ``slow`` (answers after 0.5 s), ``503`` and
``429`` -- it starts the demo app under ``otel-perf-instrument`` (uvicorn, one worker,
pinned to core 0) exporting every signal to a sink in that mode (pinned to core 1, never
decodes, so every mode costs the sink the same), loads it with ``wrk`` (core 1, 50
connections) on a mix of the demo's healthy routes, and records requests/s, p50/p99
latency, failed requests, the server's RSS, the self-telemetry (exported, dropped, export
failures, queue size) from the stats endpoint and how long the process takes to exit
after SIGTERM.  It prints medians over rounds and each mode's ratio to ``healthy``.

Exports happen during the run: spans and logs every 5 s or 512 items (SDK defaults),
metrics every 5 s (``OTEL_METRIC_EXPORT_INTERVAL=5000``).  Everything else is default,
including the 10 s OTLP timeout and the 3 s ``OTEL_PERF_SHUTDOWN_TIMEOUT``.

``python bench/faults.py sink --port P --mode M`` runs the sink alone (``bench/soak.py``
uses it in ``healthy`` mode).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TOKEN = "bench-stats-token"
MODES = ("healthy", "refused", "stall", "slow", "503", "429")
#: The demo's healthy routes, weighted: what a mostly-read API sees.
MIX = (
    ["/hello"] * 4
    + [f"/api/v1/appointments/{i}" for i in (1, 7, 13)]
    + ["/api/v1/appointments/eager?limit=10"] * 2
    + ["/api/v1/appointments?limit=10"]
)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------------------------------
# The sink: an OTLP/HTTP endpoint that misbehaves on request
# ---------------------------------------------------------------------------------------------------


def _sink_handler(mode: str, counts: dict[str, int], lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 120

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            remaining = int(self.headers.get("Content-Length") or 0)
            size = remaining
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
            with lock:
                counts["requests"] = counts.get("requests", 0) + 1
                counts["bytes"] = counts.get("bytes", 0) + size
            if mode == "stall":
                time.sleep(3600)
                return
            if mode == "slow":
                time.sleep(0.5)
            status = int(mode) if mode in ("503", "429") else 200
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            with lock:
                body = json.dumps(counts).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def serve_sink(port: int, mode: str) -> None:
    counts: dict[str, int] = {}
    server = ThreadingHTTPServer(("127.0.0.1", port), _sink_handler(mode, counts, threading.Lock()))
    server.daemon_threads = True
    server.serve_forever()


# ---------------------------------------------------------------------------------------------------
# Shared with bench/soak.py: ports, pinning, the app, wrk, RSS, the stats endpoint
# ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pin(cpu: int) -> list[str]:
    """``taskset`` prefix when there are two cores to split (server on 0, load and sink on 1)."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


def get_json(url: str, token: str = "", timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with _NO_PROXY.open(request, timeout=timeout) as response:
        return json.loads(response.read())


def post(url: str, token: str = "") -> None:
    request = urllib.request.Request(
        url, data=b"", method="POST", headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    with _NO_PROXY.open(request, timeout=5) as response:
        response.read()


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        with contextlib.suppress(urllib.error.URLError, OSError), _NO_PROXY.open(url, timeout=2) as response:
            response.read()
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its reaped children) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


@dataclass
class App:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    def stats(self, timeout: float = 30.0) -> dict[str, Any]:
        result: dict[str, Any] = get_json(self.base + "/_perf", TOKEN, timeout)
        return result

    def stop(self, timeout: float = 60) -> float:
        """SIGTERM; seconds until the process is gone."""
        start = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - start


def start_app(endpoint: str, env: dict[str, str] | None = None, workdir: Path | None = None) -> App:
    """The demo app under the launcher, uvicorn, one worker, pinned to core 0."""
    port = free_port()
    folder = workdir or Path(tempfile.mkdtemp(prefix="otel-perf-bench-"))
    full = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full |= {
        "OTEL_SERVICE_NAME": "demo",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_PERF_STATS_PATH": "/_perf",
        "OTEL_PERF_STATS_TOKEN": TOKEN,
        "OTEL_PERF_LOG_FORMAT": "off",
        "DEMO_DATABASE_URL": f"sqlite:///{folder / 'demo.db'}",
        **(env or {}),
    }
    log = folder / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                *pin(0),
                str(BIN / "otel-perf-instrument"),
                str(BIN / "uvicorn"),
                "otel_perf._demo.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/hello", proc)
    return App(proc, base, log)


def write_mix(folder: Path, paths: Sequence[str] = MIX) -> Path:
    """A wrk script cycling through ``paths`` and printing one JSON summary line."""
    listed = ", ".join(f'"{p}"' for p in paths)
    script = folder / "mix.lua"
    script.write_text(
        f"local paths = {{{listed}}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i + 1\n"
        "  return wrk.format('GET', paths[(i % #paths) + 1])\n"
        "end\n"
        "done = function(summary, latency, requests)\n"
        "  local e = summary.errors\n"
        '  io.write(string.format(\'{"duration_us":%d,"requests":%d,"connect_errors":%d,"read_errors":%d,\''
        ' .. \'"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\\n\','
        " summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,"
        " latency:percentile(50), latency:percentile(99), latency.max))\n"
        "end\n"
    )
    return script


def run_wrk(base: str, script: Path, duration: float, connections: int, threads: int = 1) -> dict[str, Any]:
    out = subprocess.run(
        [
            *pin(1),
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{duration:.0f}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            base,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in reversed(out.splitlines()) if x.startswith("{"))
    result: dict[str, Any] = json.loads(line)
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["failed"] = sum(
        result[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return result


def telemetry_totals(stats: dict[str, Any]) -> dict[str, float]:
    t = stats.get("telemetry", {})
    return {
        f"{key}_{signal}": float(t.get(signal, {}).get(key, 0))
        for signal in ("traces", "metrics", "logs")
        for key in ("exported", "dropped", "export_failures", "queue_size")
    }


# ---------------------------------------------------------------------------------------------------
# The fault benchmark
# ---------------------------------------------------------------------------------------------------


@dataclass
class Run:
    mode: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    failed: int
    requests: int
    rss_mb: float
    exit_s: float
    telemetry: dict[str, float] = field(default_factory=dict)
    #: 1-minute load average at the end of the run: other work on the machine shows here.
    load_average: float = 0.0


@contextlib.contextmanager
def sink(mode: str) -> Iterator[str]:
    """The endpoint URL for ``mode``; a sink process for all but ``refused``."""
    port = free_port()
    if mode == "refused":
        yield f"http://127.0.0.1:{port}"  # nothing listens there
        return
    sink_mode = {"healthy": "ok", "slow": "slow"}.get(mode, mode)
    proc = subprocess.Popen(
        [*pin(1), sys.executable, __file__, "sink", "--port", str(port), "--mode", sink_mode],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def one_run(mode: str, round_: int, duration: float, connections: int, folder: Path) -> Run:
    with sink(mode) as endpoint:
        app = start_app(endpoint, {"OTEL_METRIC_EXPORT_INTERVAL": "5000"})
        try:
            script = write_mix(folder)
            run_wrk(app.base, script, 3, connections)  # warm-up: imports, caches, first exports
            cpu_before = cpu_seconds(app.proc.pid)
            result = run_wrk(app.base, script, duration, connections)
            cpu_us = (cpu_seconds(app.proc.pid) - cpu_before) / max(result["requests"], 1) * 1e6
            rss = rss_mb(app.proc.pid)
            load_average = os.getloadavg()[0]
            try:
                telemetry = telemetry_totals(app.stats())
            except OSError as exc:  # a busy machine: the run still counts, its telemetry is unknown
                print(f"{mode}: stats endpoint did not answer: {exc}", file=sys.stderr)
                telemetry = {}
        finally:
            exit_s = app.stop()
    return Run(
        mode,
        round_,
        result["rps"],
        result["p50_us"] / 1000,
        result["p99_us"] / 1000,
        cpu_us,
        result["failed"],
        result["requests"],
        rss,
        exit_s,
        telemetry,
        load_average,
    )


def main_bench(argv: Sequence[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load per run")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--json", type=Path, help="also write the raw runs here")
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        p.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    folder = Path(tempfile.mkdtemp(prefix="otel-perf-faults-"))
    runs: list[Run] = []
    for round_ in range(args.rounds):
        order = modes[round_ % len(modes) :] + modes[: round_ % len(modes)]  # rotate: no mode always first
        for mode in order:
            run = one_run(mode, round_, args.duration, args.connections, folder)
            runs.append(run)
            print(
                f"round {round_} {mode:8} {run.rps:8.1f} req/s  p50 {run.p50_ms:6.1f} ms"
                f"  p99 {run.p99_ms:7.1f} ms  CPU {run.cpu_us_per_request:5.0f} µs/req  failed {run.failed}"
                f"  exit {run.exit_s:4.1f} s  load {run.load_average:.1f}",
                flush=True,
            )
    _report(runs, modes)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2))


def _report(runs: list[Run], modes: list[str]) -> None:
    def med(mode: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs if r.mode == mode)

    def spread(mode: str, attr: str) -> str:
        values = [getattr(r, attr) for r in runs if r.mode == mode]
        return f"{min(values):.0f}-{max(values):.0f}"

    def tel(mode: str, key: str) -> float:
        return statistics.median(r.telemetry.get(key, 0) for r in runs if r.mode == mode)

    def ratio(mode: str, attr: str) -> str:
        return f"{med(mode, attr) / med('healthy', attr):.3f}" if "healthy" in modes else "-"

    print()
    print(
        "| backend | req/s (range) | vs healthy | CPU µs/req | vs healthy | p50 ms | vs healthy | p99 ms "
        "| failed | RSS MB | exit s | spans dropped | span export failures | logs dropped |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        print(
            f"| {mode} | {med(mode, 'rps'):.0f} ({spread(mode, 'rps')}) | {ratio(mode, 'rps')} "
            f"| {med(mode, 'cpu_us_per_request'):.0f} | {ratio(mode, 'cpu_us_per_request')} "
            f"| {med(mode, 'p50_ms'):.1f} | {ratio(mode, 'p50_ms')} | {med(mode, 'p99_ms'):.1f} "
            f"| {sum(r.failed for r in runs if r.mode == mode)} | {med(mode, 'rss_mb'):.0f} "
            f"| {med(mode, 'exit_s'):.1f} | {tel(mode, 'dropped_traces'):.0f} "
            f"| {tel(mode, 'export_failures_traces'):.0f} | {tel(mode, 'dropped_logs'):.0f} |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "sink":
        sink_args = argparse.ArgumentParser(prog="faults.py sink")
        sink_args.add_argument("--port", type=int, required=True)
        sink_args.add_argument("--mode", choices=("ok", "stall", "slow", "503", "429"), default="ok")
        parsed = sink_args.parse_args(sys.argv[2:])
        serve_sink(parsed.port, parsed.mode)
    else:
        main_bench(sys.argv[1:])
