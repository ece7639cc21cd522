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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENVS = BENCH / ".venvs"
RESULTS = BENCH / "results"
ENDPOINTS = ("/hello", "/items/42", "/db")
LABELS = {"/hello": "/hello", "/items/42": "/items/{id}", "/db": "/db"}

#: The apps, each with the same three endpoints.
APPS: dict[str, dict[str, Any]] = {
    "fastapi": {"server": "uvicorn", "target": "app:app", "env": {}},
    "django": {
        "server": "gunicorn",
        "target": "djbench.wsgi",
        "env": {"DJANGO_SETTINGS_MODULE": "djbench.settings"},
    },
    "flask": {"server": "gunicorn", "target": "flask_bench:app", "env": {}},
}
ALL_APPS = tuple(APPS)

#: The configurations.  "ours" is what the README recommends for production: 10% of traces
#: (parent-based), RED and DB metrics and findings for 100% of requests, every signal over OTLP.
#: Keys: ``venv`` (a name, or one per app), ``launcher`` (the command put before the server, or
#: None), ``env``, ``apps`` (where it applies), ``target`` (per app: a wrapper module of
#: ``bench/peers/`` that sets the peer up in code and serves the same app), ``export``: "otlp"
#: (the OTEL_* exporter variables point at the configuration's sink), "datadog" (the
#: DD_TRACE_AGENT_URL does), or None (nothing leaves the process), ``traced``: every request
#: traced (the peers "ours-100" is compared with).
CONFIGS: dict[str, dict[str, Any]] = {
    "bare": {"venv": "ours", "launcher": None, "env": {}, "export": None},
    "ours": {
        "venv": "ours",
        "launcher": "otel-perf-instrument",
        "env": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
        "export": "otlp",
    },
    "ours-100": {
        "venv": "ours",
        "launcher": "otel-perf-instrument",
        "env": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
        "export": "otlp",
    },
    "stock": {
        "venv": {"fastapi": "stock", "django": "stock-django", "flask": "stock-flask"},
        "launcher": "opentelemetry-instrument",
        "env": {},
        "export": "otlp",
        "traced": True,
    },
    "stock-nosub": {
        "venv": "stock",
        "apps": ("fastapi",),
        "launcher": "opentelemetry-instrument",
        # The contrib FastAPI instrumentation takes exclude_spans only as an argument of
        # instrument_app() (0.66b1/b2 read no variable for it): the auto-instrumentor is
        # disabled and peers/otel_fastapi_nosub.py instruments the app with the argument.
        "env": {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "fastapi"},
        "target": {"fastapi": "peers.otel_fastapi_nosub:app"},
        "export": "otlp",
        "traced": True,
    },
    "fastapi-native": {
        "venv": "fastapi-native",
        "apps": ("fastapi",),
        "launcher": "opentelemetry-instrument",
        "env": {},
        "export": "otlp",
        "traced": True,
    },
    "ddtrace": {
        "venv": "ddtrace",
        "launcher": "ddtrace-run",
        "env": {
            "DD_REMOTE_CONFIGURATION_ENABLED": "false",
            "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
            "DD_TRACE_STARTUP_LOGS": "false",
            "DD_TRACE_DEBUG": "false",
        },
        "export": "datadog",
        "traced": True,
    },
    "logfire": {
        "venv": "logfire",
        "launcher": None,
        "env": {},
        "target": {
            "fastapi": "peers.logfire_fastapi:app",
            "django": "peers.logfire_django",
            "flask": "peers.logfire_flask:app",
        },
        "export": "otlp",
        "traced": True,
    },
    "prom": {
        "venv": "prom",
        "apps": ("fastapi",),
        "launcher": None,
        "env": {},
        "target": {"fastapi": "peers.prom_fastapi:app"},
        "export": None,
    },
}
DESCRIPTIONS = {
    "bare": "the app alone",
    "ours": "otel-perf-instrument, README production settings (10% traces, all metrics/findings), OTLP",
    "ours-100": "otel-perf-instrument, 100% of traces, OTLP",
    "stock": "opentelemetry-instrument (distro + the app's contrib instrumentations: fastapi: "
    "fastapi/sqlalchemy, with the ASGI send/receive spans; django: django/sqlite3; flask: "
    "flask/sqlalchemy), 100% of traces, OTLP",
    "stock-nosub": "the same, FastAPI instrumented with exclude_spans=[receive, send] (one span per "
    "request + SQL spans)",
    "fastapi-native": "FastAPI's own telemetry (fastapi.telemetry) under opentelemetry-instrument with "
    "no instrumentation package (distro: SDK + OTLP), 100% of traces",
    "ddtrace": "ddtrace-run (its web framework + SQLAlchemy/sqlite3 integrations), 100% of traces, "
    "to the loopback sink as agent (no agent)",
    "logfire": "logfire.configure(send_to_logfire=False) + instrument_<framework>() and SQLAlchemy/"
    "sqlite3, 100% of traces, OTLP",
    "prom": "prometheus-fastapi-instrumentator (metrics only, no tracing; /metrics not scraped)",
}

#: Targets (issue 23), as ratios to bare in the same run.
TARGETS = (
    *(("fastapi", "ours", e, "rps_ratio", ">=", 0.85) for e in ("/hello", "/items/{id}")),
    ("fastapi", "ours", "/db", "rps_ratio", ">=", 0.96),
    ("fastapi", "ours", "*", "p99_ratio", "<=", 1.3),
    ("fastapi", "ours", "-", "rss_delta_mb", "<=", 10.0),
    *(("fastapi", "ours-100", e, "rps_ratio", ">=", 0.75) for e in ("/hello", "/items/{id}")),
    ("fastapi", "ours-100", "/db", "rps_ratio", ">=", 0.92),
    ("fastapi", "ours-100", "*", "p99_ratio", "<=", 2.0),
    ("fastapi", "ours-100", "-", "rss_delta_mb", "<=", 12.0),
    *(
        target
        for app in ("django", "flask")
        for target in (
            (app, "ours", "/hello", "rps_ratio", ">=", 0.80),
            (app, "ours", "/items/{id}", "rps_ratio", ">=", 0.80),
            (app, "ours", "/db", "rps_ratio", ">=", 0.95),
            (app, "ours", "*", "p99_ratio", "<=", 1.5),
            (app, "ours", "-", "rss_delta_mb", "<=", 12.0),
        )
    ),
)
TARGET_HEADINGS = {
    "fastapi": "Targets (issue 23, FastAPI):",
    "django": "Targets (issue 23, Django):",
    "flask": "Targets (issue 23, Flask):",
}


def applies(config: str, app: str) -> bool:
    return app in CONFIGS[config].get("apps", ALL_APPS)


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
        " 'otel-perf-instrument', 'ddtrace', 'logfire', 'prometheus-fastapi-instrumentator'):\n"
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
        """The memory the server holds: the RSS of its largest process (uvicorn's, gunicorn's
        worker) plus the private pages of the others (gunicorn's master).  Summing the RSS of a
        master and its forked worker would count every page they still share twice."""
        sizes = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = {}
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
                    name, _, value = line.partition(":")
                    fields[name] = int(value.split()[0])
                private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
                sizes.append((fields.get("Rss", 0), private))
        if not sizes:
            return float("nan")
        sizes.sort(reverse=True)
        return (sizes[0][0] + sum(private for _, private in sizes[1:])) / 1024.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_server(
    app: str,
    config: str,
    python: Path,
    pin: Pinning,
    sink_port: int,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
) -> Server:
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
            **(extra_env or {}),
        }
    )
    if app_spec["server"] == "gunicorn":  # importable before gunicorn's --chdir (instrumentors load first)
        env["PYTHONPATH"] = os.pathsep.join(p for p in ((extra_env or {}).get("PYTHONPATH"), str(BENCH)) if p)
    target = spec.get("target", {}).get(app, app_spec["target"])
    if spec["export"] == "datadog":
        env.update(
            {
                "DD_SERVICE": f"bench-{app}-{config}",
                "DD_TRACE_AGENT_URL": f"http://127.0.0.1:{sink_port}",
                # No DogStatsD on the loopback: its UDP packets go to a closed port.
                "DD_DOGSTATSD_URL": f"udp://127.0.0.1:{sink_port}",
                **spec["env"],
            }
        )
    elif spec["export"] == "otlp":
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
    else:
        env.update(spec["env"])
    if app_spec["server"] == "uvicorn":
        serve = [
            str(bindir / "uvicorn"),
            "--app-dir",
            str(BENCH),
            target,
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
            target,
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


def wrk(
    pin: Pinning,
    url: str,
    seconds: float,
    connections: int,
    script: str = "report.lua",
    headers: Sequence[str] = (),
    script_args: Sequence[str] = (),
) -> dict[str, float]:
    cmd = [
        *pin.load(),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        *(x for h in headers for x in ("-H", h)),
        "-s",
        str(BENCH / script),
        url,
        *(["--", *script_args] if script_args else []),
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
    """The environment a configuration of an app runs in."""
    venv = CONFIGS[config]["venv"]
    return str(venv[app] if isinstance(venv, dict) else venv)


def interleaved(
    configs: list[str], slices: int, servers: dict[str, Server], load: Callable[[Server], dict[str, float]]
) -> dict[str, list[dict[str, float]]]:
    """``load`` on every configuration's server, ``slices`` times, alternating the order each
    slice (no configuration always runs first); each result gets the server's CPU seconds."""
    acc: dict[str, list[dict[str, float]]] = {c: [] for c in configs}
    for n in range(slices):
        for config in configs if n % 2 == 0 else configs[::-1]:
            server = servers[config]
            cpu0 = server.cpu_seconds()
            r = load(server)
            r["cpu"] = server.cpu_seconds() - cpu0
            acc[config].append(r)
    return acc


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
    configs = [c for c in configs if applies(c, app)]
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
            acc = interleaved(
                order, args.slices, servers,
                lambda server: wrk(pin, server.base + endpoint, slice_s, args.connections),  # noqa: B023
            )  # fmt: skip
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


def check_peers(rows: list[dict[str, Any]], app: str) -> list[str]:
    """Ours tracing every request against the best peer that does too, endpoint by endpoint:
    our overhead (1 - ratio) at most a third of the best peer's."""
    out = []
    for endpoint in LABELS.values():
        at = {r["config"]: r for r in rows if r["app"] == app and r["endpoint"] == endpoint}
        peers = [r for c, r in at.items() if CONFIGS[c].get("traced")]
        if "ours-100" not in at or not peers:
            continue
        best = max(peers, key=lambda r: r["rps_ratio"])
        ours = 1.0 - at["ours-100"]["rps_ratio"]
        limit = (1.0 - best["rps_ratio"]) / 3.0
        out.append(
            f"{'PASS' if ours <= limit else 'FAIL'}  ours-100 {endpoint} overhead {ours:.3f} "
            f"(target <= a third of the best peer's: {best['config']} {1.0 - best['rps_ratio']:.3f} / 3 "
            f"= {limit:.3f})"
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
        f"Load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in m['load_before'])}; after: "
        f"{' '.join(f'{x:.2f}' for x in m['load_after'])}; took {m['minutes']:.1f} min",
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
            head.append(f"  {c:14s} {DESCRIPTIONS[c]}")
    rows = summarize(run)
    parts = ["\n".join(head), "", table(rows), "", "Exported to the OTLP sink:", *exported_summary(run)]
    for app in APPS:
        targets = check_targets(rows, app) + check_peers(rows, app)
        if targets:
            parts += ["", TARGET_HEADINGS[app], *targets]
    return "\n".join(parts) + "\n"


# --- the scaling table ---------------------------------------------------------------------

#: Headers wrk sends in the header scenarios, and what the "-hdr" configurations capture.
SCALING_HEADERS = (
    "User-Agent: bench/1.0 (wrk)",
    "Accept: application/json",
    "X-Request-Id: 0af7651916cd43dd8448eb211c80319c",
    "X-Tenant: acme",
)
CAPTURE_ENV = {
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "user-agent,accept,x-request-id,x-tenant",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "content-type,content-length",
}
SCALING_CONFIGS = {
    "ours-hdr": {**CONFIGS["ours"], "env": {**CONFIGS["ours"]["env"], **CAPTURE_ENV}},
    "ours-100-hdr": {**CONFIGS["ours-100"], "env": {**CONFIGS["ours-100"]["env"], **CAPTURE_ENV}},
}
DESCRIPTIONS["ours-hdr"] = (
    "ours capturing 4 request and 2 response headers (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*)"
)
DESCRIPTIONS["ours-100-hdr"] = "ours-100 capturing the same headers"


@dataclass(frozen=True)
class Scenario:
    """One line of the scaling table: what grows, its value, the server set it runs on
    (``routes``: the app's ``BENCH_ROUTES``), the path (or the route rotation) and the load."""

    dimension: str
    value: str
    path: str
    routes: int = 0
    connections: int = 16
    headers: bool = False
    configs: tuple[str, ...] = ("bare", "ours", "ours-100")


SCENARIOS = (
    Scenario("statements per request", "1", "/stmts/1"),
    Scenario("statements per request", "10", "/stmts/10"),
    Scenario("statements per request", "100", "/stmts/100"),
    Scenario("distinct routes", "10", "/route0", routes=10),
    Scenario("distinct routes", "1,000", "/route0", routes=1000),
    Scenario("concurrent connections", "16", "/hello"),
    Scenario("concurrent connections", "256", "/hello", connections=256),
    Scenario("header capture", "off", "/hello", headers=True),
    Scenario("header capture", "on", "/hello", headers=True, configs=("bare", "ours-hdr", "ours-100-hdr")),
)


@dataclass
class ScaleSample:
    scenario: int
    config: str
    round: int
    rps: float
    p99_ms: float
    cpu_us: float
    rss_mb: float
    errors: int


def scenario_load(pin: Pinning, server: Server, sc: Scenario, seconds: float) -> dict[str, float]:
    return wrk(
        pin,
        server.base + sc.path,
        seconds,
        sc.connections,
        "routes.lua" if sc.routes else "report.lua",
        SCALING_HEADERS if sc.headers else (),
        (str(sc.routes),) if sc.routes else (),
    )


def scaling_round(
    samples: list[ScaleSample],
    rnd: int,
    python: Path,
    pin: Pinning,
    sinks: dict[str, int],
    workdir: Path,
    args: argparse.Namespace,
    log: Any,
) -> None:
    """One round of every scenario: a fresh server set per ``routes`` value, each scenario's
    configurations loaded in alternating slices (as in the main table)."""
    for routes in sorted({sc.routes for sc in SCENARIOS}):
        scenarios = [(i, sc) for i, sc in enumerate(SCENARIOS) if sc.routes == routes]
        configs = sorted({c for _, sc in scenarios for c in sc.configs}, key=list(CONFIGS).index)
        shift = rnd % len(configs)
        order = configs[shift:] + configs[:shift]
        extra = {"BENCH_ROUTES": str(routes)} if routes else {}
        servers: dict[str, Server] = {}
        try:
            for config in order:
                servers[config] = start_server("fastapi", config, python, pin, sinks[config], workdir, extra)
            for index, sc in scenarios:
                active = [c for c in order if c in sc.configs]
                for config in active:
                    scenario_load(pin, servers[config], sc, args.warmup)
                acc = interleaved(
                    active, args.slices, servers,
                    lambda server: scenario_load(pin, server, sc, args.duration / args.slices),  # noqa: B023
                )  # fmt: skip
                for config in active:
                    parts = acc[config]
                    requests = sum(x["requests"] for x in parts)
                    seconds = sum(x["duration_us"] for x in parts) / 1e6
                    sample = ScaleSample(
                        index,
                        config,
                        rnd,
                        requests / seconds,
                        _median([x["p99_us"] for x in parts]) / 1000.0,
                        sum(x["cpu"] for x in parts) / max(1, requests) * 1e6,
                        servers[config].rss_mb(),
                        int(sum(x["errors"] for x in parts)),
                    )
                    samples.append(sample)
                    log(
                        f"  round {rnd + 1} {sc.dimension} {sc.value:6s} {config:13s} {sample.rps:8.0f} rps  "
                        f"p99 {sample.p99_ms:6.2f} ms  cpu {sample.cpu_us:6.0f} µs/req  "
                        f"RSS {sample.rss_mb:5.1f} MB"
                        + (f"  ERRORS {sample.errors}" if sample.errors else "")
                    )
        finally:
            for server in servers.values():
                server.stop()


SCALING_COLUMNS = (
    "what grows",
    "value",
    "config",
    "rps",
    "x bare",
    "cpu µs/req",
    "+µs/req",
    "p99 ms",
    "p99 x bare",
    "RSS MB",
    "RSS +MB",
    "errors",
)


def scaling_table(samples: list[ScaleSample]) -> str:
    """Medians over rounds; ``+µs/req`` is the configuration's CPU per request minus bare's, per
    round; RSS after the scenario's load (the server has served every scenario before it)."""
    lines = ["| " + " | ".join(SCALING_COLUMNS) + " |", "|" + "---|" * len(SCALING_COLUMNS)]
    for index, sc in enumerate(SCENARIOS):
        mine = [x for x in samples if x.scenario == index]
        bare = {x.round: x for x in mine if x.config == "bare"}
        for config in sc.configs:
            rows = [x for x in mine if x.config == config]
            if not rows:
                continue
            paired = [(x, bare[x.round]) for x in rows if x.round in bare]
            cells = [
                sc.dimension,
                sc.value,
                config,
                f"{_median([x.rps for x in rows]):.0f}",
                f"{_median([x.rps / b.rps for x, b in paired]):.2f}",
                f"{_median([x.cpu_us for x in rows]):.0f}",
                f"{_median([x.cpu_us - b.cpu_us for x, b in paired]):+.0f}",
                f"{_median([x.p99_ms for x in rows]):.2f}",
                f"{_median([x.p99_ms / b.p99_ms for x, b in paired if b.p99_ms]):.2f}",
                f"{_median([x.rss_mb for x in rows]):.1f}",
                f"{_median([x.rss_mb - b.rss_mb for x, b in paired]):+.1f}",
                str(sum(x.errors for x in rows)),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_scaling(args: argparse.Namespace, log: Any) -> int:
    CONFIGS.update(SCALING_CONFIGS)
    python = Path(sys.executable) if args.env == "current" else ensure_venv("ours", log)
    pin = Pinning(not args.no_pin)
    info = machine(pin, {"ours": python})
    configs = sorted({c for sc in SCENARIOS for c in sc.configs}, key=list(CONFIGS).index)
    samples: list[ScaleSample] = []
    load_before = os.getloadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="otel-perf-bench-") as tmp, contextlib.ExitStack() as stack:
        sinks = {config: stack.enter_context(sink(pin)) for config in configs}
        for rnd in range(args.rounds):
            scaling_round(samples, rnd, python, pin, sinks, Path(tmp), args, log)
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()
    head = [
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory']}, Linux {info['kernel']}, "
        f"Python {info['python']}, {info['wrk']}",
        f"Pinning: {info['pinning']}",
        f"Load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {' '.join(f'{x:.2f}' for x in load_after)}; took {elapsed / 60:.1f} min",
        f"Scaling: FastAPI (bench/app.py, uvicorn), wrk -t1, {args.duration:g} s per scenario and "
        f"configuration (in {args.slices} slices) after {args.warmup:g} s warm-up; {args.rounds} "
        "interleaved round(s)",
        "Env ours: " + ", ".join(f"{k} {v}" for k, v in info["versions"]["ours"].items()),
        "Configurations:",
        *(f"  {c:13s} {DESCRIPTIONS[c]}" for c in configs),
    ]
    text = "\n".join(head) + "\n\n" + scaling_table(samples) + "\n"
    print(text, flush=True)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (RESULTS / f"scaling-{stamp}.md").write_text(text)
        (RESULTS / f"scaling-{stamp}.json").write_text(
            json.dumps(
                {"machine": info, "args": vars(args), "samples": [asdict(x) for x in samples]},
                indent=1,
                default=str,
            )
        )
        log(f"bench: results written to {RESULTS}/scaling-{stamp}.{{md,json}}")
    return 0


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="otel-perf overhead benchmark (see bench/README.md)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load per endpoint")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per endpoint")
    p.add_argument(
        "--slices",
        type=int,
        default=5,
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
    p.add_argument(
        "--scaling",
        action="store_true",
        help="the scaling table instead (FastAPI; bare, ours, ours-100 as statements, routes, "
        "connections and captured headers grow)",
    )
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
        CONFIGS[name] = {**CONFIGS["ours"], "env": env}
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
    if args.scaling:
        return run_scaling(args, log)
    configs = [c for c in CONFIGS if c in args.configs.split(",")]
    apps = [a for a in APPS if a in args.apps.split(",")]
    pythons: dict[str, Path] = {}
    for app in apps:
        for config in configs:
            if not applies(config, app):
                continue
            venv = venv_of(app, config)
            if venv not in pythons:
                pythons[venv] = (
                    Path(sys.executable)
                    if venv == "ours" and args.env == "current"
                    else ensure_venv(venv, log)
                )
    pin = Pinning(not args.no_pin)
    run = Run(args=dict(vars(args)), machine=machine(pin, pythons))
    run.machine["load_before"] = os.getloadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="otel-perf-bench-") as tmp, contextlib.ExitStack() as stack:
        sinks = {config: stack.enter_context(sink(pin)) for config in configs}
        for rnd in range(args.rounds):
            for app in apps:
                one_round(run, rnd, app, configs, pythons, pin, sinks, Path(tmp), args, log)
    run.machine["load_after"] = os.getloadavg()
    run.machine["minutes"] = (time.monotonic() - started) / 60
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
