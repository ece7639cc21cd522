"""Side-by-side overhead benchmark: bare app, ours (default and 100% sampling), stock OpenTelemetry.

    python bench/run.py                 # full run: 3 apps x 4 configurations x 3 endpoints, 3 rounds
    python bench/run.py --apps django,flask
    python bench/run.py --tiny          # smoke: bare + ours, 1 round, 2 s each, current interpreter

Three apps with the same endpoints: FastAPI (``bench/app.py`` under uvicorn), Django
(``bench/djbench/`` under gunicorn, one gthread worker) and Flask + Flask-SQLAlchemy
(``bench/flask_bench.py``, the same).  What it does, per round, per app and per configuration
(the configuration order rotates every round, so no configuration always runs first or last):

1. start the app's server pinned to core 0 (``taskset``), under the configuration's
   launcher, exporting OTLP/HTTP to ``bench/sink.py`` pinned to core 1;
2. warm every endpoint up, then load each one with ``wrk`` (1 thread, 16 connections,
   core 1) for ``--duration`` seconds;
3. record requests/s, p50/p99 latency, server CPU time per request and the server's RSS
   after the load; stop the server.

It prints one table (medians over rounds; ratios are to the bare app in the same round)
and a line per overhead target, and writes the raw numbers to ``bench/results/``.
Environments: ``bench/.venvs/ours`` (this checkout, editable, plus ``requirements-ours.txt``)
and ``bench/.venvs/stock``, ``stock-django``, ``stock-flask`` (``requirements-stock*.txt``: the
official instrumentations of each app's stack, in separate environments so one app's
instrumentors never load into another's run), created on first use; the app stack is pinned
identically in all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENVS = BENCH / ".venvs"
RESULTS = BENCH / "results"
ENDPOINTS = ("/hello", "/items/42", "/db")
LABELS = {"/hello": "/hello", "/items/42": "/items/{id}", "/db": "/db"}

#: The apps, each with the same three endpoints.  ``stock_venv``: the environment of its stock
#: configuration (the official instrumentations of its own stack).
APPS: dict[str, dict[str, Any]] = {
    "fastapi": {"server": "uvicorn", "target": "app:app", "stock_venv": "stock", "env": {}},
    "django": {
        "server": "gunicorn",
        "target": "djbench.wsgi",
        "stock_venv": "stock-django",
        "env": {"DJANGO_SETTINGS_MODULE": "djbench.settings"},
    },
    "flask": {"server": "gunicorn", "target": "flask_bench:app", "stock_venv": "stock-flask", "env": {}},
}
STOCK = {
    "fastapi": "contrib fastapi/sqlalchemy",
    "django": "contrib django/sqlite3",
    "flask": "contrib flask/sqlalchemy",
}

#: The configurations.  "ours" is what the README recommends for production: 10% of traces
#: (parent-based), RED and DB metrics and findings for 100% of requests, every signal over OTLP.
CONFIGS: dict[str, dict[str, Any]] = {
    "bare": {"venv": "ours", "launcher": None, "env": {}},
    "ours": {
        "venv": "ours",
        "launcher": "otel-perf-instrument",
        "env": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    },
    "ours-100": {
        "venv": "ours",
        "launcher": "otel-perf-instrument",
        "env": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
    },
    "stock": {"venv": "stock", "launcher": "opentelemetry-instrument", "env": {}},
}
DESCRIPTIONS = {
    "bare": "the app alone",
    "ours": "otel-perf-instrument, README production settings (10% traces, all metrics/findings), OTLP",
    "ours-100": "otel-perf-instrument, 100% of traces, OTLP",
    "stock": "opentelemetry-instrument (distro + the app's contrib instrumentations: {stock}), "
    "100% of traces, OTLP",
}

#: Targets, as ratios to bare in the same run: FastAPI (issue 6), Django and Flask (issue 23).
TARGETS = (
    ("fastapi", "ours", "/hello", "rps_ratio", ">=", 0.75),
    ("fastapi", "ours", "/db", "rps_ratio", ">=", 0.95),
    ("fastapi", "ours", "*", "p99_ratio", "<=", 2.0),
    ("fastapi", "ours-100", "/hello", "rps_ratio", ">=", 0.45),
    ("fastapi", "ours", "-", "rss_delta_mb", "<=", 15.0),
    ("fastapi", "ours-100", "-", "rss_delta_mb", "<=", 15.0),
    *(
        target
        for app in ("django", "flask")
        for target in (
            (app, "ours", "/hello", "rps_ratio", ">=", 0.80),
            (app, "ours", "/items/{id}", "rps_ratio", ">=", 0.80),
            (app, "ours", "/db", "rps_ratio", ">=", 0.95),
        )
    ),
)
TARGET_HEADINGS = {
    "fastapi": "Targets (issue 6):",
    "django": "Targets (issue 23, Django):",
    "flask": "Targets (issue 23, Flask):",
}


# --- environments ------------------------------------------------------------------------


def _venv_python(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def ensure_venv(name: str, log: Any) -> Path:
    """Create (or refresh, when its requirements changed) ``bench/.venvs/<name>``."""
    reqs = BENCH / f"requirements-{name}.txt"
    digest = hashlib.sha256()
    for path in (reqs, BENCH / "requirements-app.txt", REPO / "pyproject.toml"):
        digest.update(path.read_bytes())
    stamp = VENVS / name / ".bench-stamp"
    python = _venv_python(name)
    if python.exists() and stamp.exists() and stamp.read_text() == digest.hexdigest():
        return python
    log(f"setting up {VENVS / name} (pip, one-off) ...")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENVS / name)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    extra = ["-e", str(REPO)] if name == "ours" else []
    for cmd in ([*pip, "--upgrade", "pip"], [*pip, "-r", str(reqs), *extra]):
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    stamp.write_text(digest.hexdigest())
    return python


def versions(python: Path | str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        "for p in ('fastapi', 'starlette', 'uvicorn', 'uvloop', 'httptools', 'sqlalchemy', 'django', 'flask',"
        " 'flask-sqlalchemy', 'gunicorn', 'opentelemetry-sdk', 'opentelemetry-instrumentation-fastapi',"
        " 'opentelemetry-instrumentation-django', 'opentelemetry-instrumentation-flask',"
        " 'otel-perf-instrument'):\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout))


# --- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pinning:
    """``taskset`` prefixes: server on one core, load generator and sink on another."""

    def __init__(self, enabled: bool) -> None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.active = enabled and len(cpus) >= 2 and shutil.which("taskset") is not None
        self.server_cpu = str(cpus[0]) if self.active else ""
        self.load_cpu = str(cpus[1]) if self.active else ""

    def server(self) -> list[str]:
        return ["taskset", "-c", self.server_cpu] if self.active else []

    def load(self) -> list[str]:
        return ["taskset", "-c", self.load_cpu] if self.active else []

    def describe(self) -> str:
        if not self.active:
            return "not pinned (needs taskset and 2+ cores)"
        return f"server on cpu {self.server_cpu}; wrk and OTLP sink on cpu {self.load_cpu}"


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        data: bytes = r.read()
        return data


@contextlib.contextmanager
def sink(pin: Pinning) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [*pin.load(), sys.executable, str(BENCH / "sink.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: _get(f"http://127.0.0.1:{port}/stats"), proc, "the OTLP sink")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def sink_stats(port: int) -> dict[str, dict[str, int]]:
    data: dict[str, dict[str, int]] = json.loads(_get(f"http://127.0.0.1:{port}/stats"))
    return data


def _wait(probe: Any, proc: subprocess.Popen[Any], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it answered")
        try:
            probe()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer within {timeout:.0f} s")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The server process and its descendants (gunicorn's master and worker)."""
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo.extend(int(c) for c in (task / "children").read_text().split())
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU of the server's processes (all their threads)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024.0
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_server(app: str, config: str, python: Path, pin: Pinning, sink_port: int, workdir: Path) -> Server:
    spec = CONFIGS[config]
    app_spec = APPS[app]
    bindir = python.parent
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTHON"))}
    env.update(
        {
            "PATH": f"{bindir}{os.pathsep}{env.get('PATH', '')}",
            "BENCH_DB": str(workdir / f"{app}-{config}-{port}.db"),
            "PYTHONDONTWRITEBYTECODE": "1",
            **app_spec["env"],
        }
    )
    if app_spec["server"] == "gunicorn":  # importable before gunicorn's --chdir (instrumentors load first)
        env["PYTHONPATH"] = str(BENCH)
    if spec["launcher"]:
        env.update(
            {
                "OTEL_SERVICE_NAME": f"bench-{app}-{config}",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_LOGS_EXPORTER": "otlp",
                # Export metrics during the measured window, not only at exit (default 60 s).
                "OTEL_METRIC_EXPORT_INTERVAL": "5000",
                **spec["env"],
            }
        )
    if app_spec["server"] == "uvicorn":
        serve = [
            str(bindir / "uvicorn"),
            "--app-dir",
            str(BENCH),
            app_spec["target"],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    else:  # one gthread worker: keep-alive connections, as wrk holds them; no access log
        serve = [
            str(bindir / "gunicorn"),
            "--chdir",
            str(BENCH),
            "-w",
            "1",
            "-k",
            "gthread",
            "--threads",
            "4",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            app_spec["target"],
        ]
    cmd = [*pin.server(), *([str(bindir / spec["launcher"])] if spec["launcher"] else []), *serve]
    log = workdir / f"{app}-{config}-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(workdir))
    server = Server(proc, port, log)
    try:
        _wait(lambda: _get(server.base + "/hello"), proc, f"the {config} server")
    except RuntimeError as exc:
        server.stop()
        raise RuntimeError(f"{exc} ({app}); its output:\n{log.read_text()[-3000:]}") from None
    return server


def wrk(pin: Pinning, url: str, seconds: float, connections: int) -> dict[str, float]:
    cmd = [
        *pin.load(),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(BENCH / "report.lua"),
        url,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = [x for x in result.stdout.splitlines() if x.startswith("{")][-1]
    data: dict[str, float] = json.loads(line)
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    data["errors"] = sum(
        data[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return data


# --- one run -------------------------------------------------------------------------------


@dataclass
class Sample:
    app: str
    config: str
    endpoint: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    errors: int


@dataclass
class Run:
    args: dict[str, Any]
    machine: dict[str, Any]
    samples: list[Sample] = field(default_factory=list)
    rss_mb: dict[str, list[float]] = field(default_factory=dict)
    exported: dict[str, list[dict[str, dict[str, int]]]] = field(default_factory=dict)


def venv_of(app: str, config: str) -> str:
    """The environment a configuration of an app runs in (stock: the app's own)."""
    return str(APPS[app]["stock_venv"]) if config == "stock" else str(CONFIGS[config]["venv"])


def one_round(
    run: Run,
    rnd: int,
    app: str,
    configs: list[str],
    pythons: dict[str, Path],
    pin: Pinning,
    sinks: dict[str, int],
    workdir: Path,
    args: argparse.Namespace,
    log: Any,
) -> None:
    """Start every configuration's server of ``app``, then load them in turn, slice by slice."""
    shift = rnd % len(configs)
    order = configs[shift:] + configs[:shift]
    endpoints = [e for e in ENDPOINTS if e in args.endpoints.split(",")]
    servers: dict[str, Server] = {}
    try:
        for config in order:
            servers[config] = start_server(
                app, config, pythons[venv_of(app, config)], pin, sinks[config], workdir
            )
        for config in order:
            for endpoint in endpoints:
                wrk(pin, servers[config].base + endpoint, args.warmup, args.connections)
        before = {config: sink_stats(sinks[config]) for config in order}
        slice_s = args.duration / args.slices
        for endpoint in endpoints:
            acc: dict[str, list[dict[str, float]]] = {c: [] for c in order}
            for n in range(args.slices):
                for config in order if n % 2 == 0 else order[::-1]:
                    server = servers[config]
                    cpu0 = server.cpu_seconds()
                    r = wrk(pin, server.base + endpoint, slice_s, args.connections)
                    r["cpu"] = server.cpu_seconds() - cpu0
                    acc[config].append(r)
            for config in order:
                parts = acc[config]
                requests = sum(p["requests"] for p in parts)
                seconds = sum(p["duration_us"] for p in parts) / 1e6
                sample = Sample(
                    app,
                    config,
                    endpoint,
                    rnd,
                    requests / seconds,
                    _median([p["p50_us"] for p in parts]) / 1000.0,
                    _median([p["p99_us"] for p in parts]) / 1000.0,
                    sum(p["cpu"] for p in parts) / max(1, requests) * 1e6,
                    int(sum(p["errors"] for p in parts)),
                )
                run.samples.append(sample)
                log(
                    f"  round {rnd + 1} {app:8s}{config:9s} {LABELS[endpoint]:12s} {sample.rps:8.0f} rps  "
                    f"p50 {sample.p50_ms:6.2f} ms  p99 {sample.p99_ms:6.2f} ms  "
                    f"cpu {sample.cpu_us:6.0f} µs/req"
                    + (f"  ERRORS {sample.errors}" if sample.errors else "")
                )
        time.sleep(0.5)
        for config in order:
            run.rss_mb.setdefault(f"{app}/{config}", []).append(servers[config].rss_mb())
            after = sink_stats(sinks[config])
            run.exported.setdefault(f"{app}/{config}", []).append(
                {
                    sig: {k: v - before[config].get(sig, {}).get(k, 0) for k, v in counts.items()}
                    for sig, counts in after.items()
                }
            )
    finally:
        for server in servers.values():
            server.stop()


def machine(pin: Pinning, envs: dict[str, Path]) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        mem = f"{int(Path('/proc/meminfo').read_text().split()[1]) / 1024 / 1024:.1f} GiB"
    wrk_version = subprocess.run(
        ["wrk", "-v"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version[0] if wrk_version else "",
        "pinning": pin.describe(),
        "versions": {name: versions(python) for name, python in envs.items()},
    }


# --- the table ------------------------------------------------------------------------------


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarize(run: Run) -> list[dict[str, Any]]:
    """One row per app, configuration and endpoint: medians over rounds, ratios to bare per round."""
    by: dict[tuple[str, str, str], dict[int, Sample]] = {}
    for s in run.samples:
        by.setdefault((s.app, s.config, s.endpoint), {})[s.round] = s
    rows = []
    configs = [c for c in CONFIGS if any(s.config == c for s in run.samples)]
    for app, config, endpoint in [(a, c, e) for a in APPS for c in configs for e in ENDPOINTS]:
        samples = by.get((app, config, endpoint), {})
        if not samples:
            continue
        bare_rss = _median(run.rss_mb.get(f"{app}/bare", []))
        bare = by.get((app, "bare", endpoint), {})
        ratios = [s.rps / bare[r].rps for r, s in samples.items() if r in bare and bare[r].rps]
        p99 = _median([s.p99_ms for s in samples.values()])
        bare_p99 = _median([s.p99_ms for s in bare.values()])
        rss = _median(run.rss_mb.get(f"{app}/{config}", []))
        rows.append(
            {
                "app": app,
                "config": config,
                "endpoint": LABELS[endpoint],
                "rps": _median([s.rps for s in samples.values()]),
                "rps_ratio": _median(ratios),
                "ratio_min": min(ratios) if ratios else float("nan"),
                "ratio_max": max(ratios) if ratios else float("nan"),
                "p50_ms": _median([s.p50_ms for s in samples.values()]),
                "p99_ms": p99,
                "p99_ratio": p99 / bare_p99 if bare_p99 else float("nan"),
                "cpu_us": _median([s.cpu_us for s in samples.values()]),
                "cpu_ratio": _median(
                    [bare[r].cpu_us / s.cpu_us for r, s in samples.items() if r in bare and s.cpu_us]
                ),
                "rss_mb": rss,
                "rss_delta_mb": rss - bare_rss,
                "errors": sum(s.errors for s in samples.values()),
            }
        )
    return rows


COLUMNS = (
    "app",
    "config",
    "endpoint",
    "rps",
    "x bare",
    "range",
    "p50 ms",
    "p99 ms",
    "p99 x bare",
    "cpu µs/req",
    "cpu x bare",
    "RSS MB",
    "RSS +MB",
    "errors",
)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [
            r["app"],
            r["config"],
            r["endpoint"],
            f"{r['rps']:.0f}",
            f"{r['rps_ratio']:.2f}",
            f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['p99_ratio']:.2f}",
            f"{r['cpu_us']:.0f}",
            f"{r['cpu_ratio']:.2f}",
            f"{r['rss_mb']:.1f}",
            f"{r['rss_delta_mb']:+.1f}",
            str(r["errors"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_targets(rows: list[dict[str, Any]], only_app: str) -> list[str]:
    out = []
    for app, config, endpoint, metric, op, limit in TARGETS:
        if app != only_app:
            continue
        selected = [
            r
            for r in rows
            if r["app"] == app
            and r["config"] == config
            and (endpoint in ("*", "-") or r["endpoint"] == endpoint)
        ]
        if endpoint == "-":
            selected = selected[:1]
        for r in selected:
            value = r[metric]
            ok = value >= limit if op == ">=" else value <= limit
            where = "" if endpoint == "-" else f" {r['endpoint']}"
            out.append(
                f"{'PASS' if ok else 'FAIL'}  {config}{where} {metric} {value:.3f} (target {op} {limit:g})"
            )
    return out


def exported_summary(run: Run) -> list[str]:
    out = []
    for config, rounds in run.exported.items():
        if config.endswith("/bare"):
            continue
        parts = []
        for sig in ("traces", "metrics", "logs"):
            reqs = [r.get(sig, {}).get("requests", 0) for r in rounds]
            size = [r.get(sig, {}).get("bytes", 0) for r in rounds]
            parts.append(f"{sig} {_median(reqs):.0f} posts / {_median(size) / 1024:.0f} KiB")
        out.append(f"  {config:17s} " + ", ".join(parts) + " per round (median)")
    return out


def render(run: Run) -> str:
    m = run.machine
    a = run.args
    head = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}, "
        f"Python {m['python']}, {m['wrk']}",
        f"Pinning: {m['pinning']}",
        f"Load: wrk -t1 -c{a['connections']}, {a['duration']:g} s per endpoint (in {a['slices']} slices) "
        f"after {a['warmup']:g} s warm-up; {a['rounds']} interleaved round(s); "
        "FastAPI: uvicorn, 1 process; Django and Flask: gunicorn, 1 gthread worker (4 threads); "
        "no access log",
    ]
    for name, vers in m["versions"].items():
        head.append(f"Env {name}: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    head.append("Configurations:")
    ran = {key.split("/")[1] for key in run.rss_mb}
    for c in CONFIGS:
        if c in ran:
            text = DESCRIPTIONS[c]
            if "{stock}" in text:
                apps = [a for a in APPS if f"{a}/{c}" in run.rss_mb]
                text = text.format(stock="; ".join(f"{a}: {STOCK[a]}" for a in apps))
            head.append(f"  {c:9s} {text}")
    rows = summarize(run)
    parts = ["\n".join(head), "", table(rows), "", "Exported to the OTLP sink:", *exported_summary(run)]
    for app in APPS:
        targets = check_targets(rows, app)
        if targets:
            parts += ["", TARGET_HEADINGS[app], *targets]
    return "\n".join(parts) + "\n"


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="otel-perf overhead benchmark (see bench/README.md)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per endpoint")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per endpoint")
    p.add_argument(
        "--slices",
        type=int,
        default=10,
        help="split each endpoint's load into this many slices, interleaved across configurations",
    )
    p.add_argument("--connections", type=int, default=16)
    p.add_argument(
        "--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS)
    )
    p.add_argument(
        "--env",
        choices=("venv", "current"),
        default="venv",
        help="run bare/ours in bench/.venvs/ours (default) or in the current interpreter",
    )
    p.add_argument(
        "--endpoints", default=",".join(ENDPOINTS), help="comma-separated subset of " + ", ".join(ENDPOINTS)
    )
    p.add_argument("--apps", default=",".join(APPS), help="comma-separated subset of " + ", ".join(APPS))
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE[,VAR=VALUE]",
        help="an extra configuration: ours (10%% traces) with these variables set (repeatable)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument(
        "--tiny", action="store_true", help="CI smoke: bare + ours, 1 round, 2 s, current interpreter"
    )
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = p.parse_args(argv)
    if args.tiny:
        args.rounds, args.duration, args.warmup, args.env, args.slices = 1, 2.0, 1.0, "current", 1
        if args.configs == ",".join(CONFIGS):
            args.configs = "bare,ours"
    for variant in args.variant:
        name, _, assignments = variant.partition(":")
        env = dict(CONFIGS["ours"]["env"])
        # A comma starts the next assignment only before NAME=: values may hold commas.
        parts = re.split(r",(?=[A-Za-z_][A-Za-z0-9_]*=)", assignments)
        if not all("=" in a for a in parts if a):
            p.error(f"--variant {variant!r}: expected NAME:VAR=VALUE[,VAR=VALUE...]")
        env.update(dict(a.split("=", 1) for a in parts if a))
        CONFIGS[name] = {"venv": "ours", "launcher": "otel-perf-instrument", "env": env}
        DESCRIPTIONS[name] = "ours with " + assignments
        args.configs += "," + name
    unknown = set(args.configs.split(",")) - set(CONFIGS)
    if unknown:
        p.error(f"unknown configuration(s): {', '.join(sorted(unknown))}")
    unknown = set(args.apps.split(",")) - set(APPS)
    if unknown:
        p.error(f"unknown app(s): {', '.join(sorted(unknown))} (choose from {', '.join(APPS)})")
    if "bare" not in args.configs.split(","):
        p.error("the bare configuration is required (every ratio is to it)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if shutil.which("wrk") is None:
        log("bench: wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
        return 2
    configs = [c for c in CONFIGS if c in args.configs.split(",")]
    apps = [a for a in APPS if a in args.apps.split(",")]
    pythons: dict[str, Path] = {}
    for app in apps:
        for config in configs:
            venv = venv_of(app, config)
            if venv not in pythons:
                pythons[venv] = (
                    Path(sys.executable)
                    if venv == "ours" and args.env == "current"
                    else ensure_venv(venv, log)
                )
    pin = Pinning(not args.no_pin)
    run = Run(args=dict(vars(args)), machine=machine(pin, pythons))
    with tempfile.TemporaryDirectory(prefix="otel-perf-bench-") as tmp, contextlib.ExitStack() as stack:
        sinks = {config: stack.enter_context(sink(pin)) for config in configs}
        for rnd in range(args.rounds):
            for app in apps:
                one_round(run, rnd, app, configs, pythons, pin, sinks, Path(tmp), args, log)
    text = render(run)
    print(text, flush=True)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (RESULTS / f"{stamp}.md").write_text(text)
        (RESULTS / f"{stamp}.json").write_text(
            json.dumps({**asdict(run), "rows": summarize(run)}, indent=1, default=str)
        )
        log(f"bench: results written to {RESULTS / stamp}.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
