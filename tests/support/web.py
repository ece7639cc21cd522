"""The Django project and the Flask app of the tests, under the real launcher.

:func:`django_env` / :func:`flask_env` create and fill the app's database (plain Python, no
launcher) and return the environment its servers need; :func:`serve` starts one of the
server command lines of :data:`SERVERS` under ``otel-perf-instrument`` and waits until the
app answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from support.launch import APPS, BIN, launcher
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, clean_environ, free_port

DJANGO_SITE = APPS / "djangosite"
STATS_TOKEN = "web-stats-token-0123456789"

#: name -> (server command line for an app spec and a port); ``{app}`` is the WSGI/ASGI target.
SERVERS: dict[str, Callable[[str, int], list[str]]] = {
    "gunicorn-1": lambda app, port: [str(BIN / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", app],
    "gunicorn": lambda app, port: [str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", app],
    "gunicorn-preload": lambda app, port: [
        str(BIN / "gunicorn"), "--preload", "-w", "2", "-b", f"127.0.0.1:{port}", app,
    ],
    "gthread": lambda app, port: [
        str(BIN / "gunicorn"), "-w", "2", "-k", "gthread", "--threads", "4", "-b", f"127.0.0.1:{port}", app,
    ],
    "gthread-preload": lambda app, port: [
        str(BIN / "gunicorn"), "--preload", "-w", "2", "-k", "gthread", "--threads", "4",
        "-b", f"127.0.0.1:{port}", app,
    ],
    "uvicorn": lambda app, port: [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), app],
    "uvicorn-workers": lambda app, port: [
        str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--workers", "2", app,
    ],
}  # fmt: skip

#: What the insight tests set: low slow-query threshold, the stats endpoint on.
INSIGHT_ENV = {
    "OTEL_PERF_SLOW_QUERY_MS": "20",
    "OTEL_PERF_STATS_PATH": "/_perf",
    "OTEL_PERF_STATS_TOKEN": STATS_TOKEN,
}


def _run(args: list[str], env: Mapping[str, str], cwd: Path | None = None) -> None:
    result = subprocess.run(
        args, env=clean_environ(dict(env)), cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")


def django_env(db: str, **extra: str) -> dict[str, str]:
    """Create the project's tables in ``db`` (a SQLite path or ``postgresql://`` URL) and seed them."""
    path = pythonpath(DJANGO_SITE, os.environ.get("PYTHONPATH", ""))  # a caller's (a checkout's src) kept
    env = {"APP_DB": db, "DJANGO_SETTINGS_MODULE": "djsite.settings", "PYTHONPATH": path, **extra}
    manage = str(DJANGO_SITE / "manage.py")
    _run([sys.executable, manage, "migrate", "--run-syncdb", "-v0"], env)
    _run([sys.executable, manage, "seed"], env)
    return env


def flask_env(db_url: str, **extra: str) -> dict[str, str]:
    """Create and fill the Flask app's tables at ``db_url`` (a SQLAlchemy URL)."""
    path = pythonpath(APPS, os.environ.get("PYTHONPATH", ""))  # a caller's (a checkout's src) kept
    env = {"APP_DATABASE_URL": db_url, "PYTHONPATH": path, "FLASK_APP": "flask_app", **extra}
    _run([sys.executable, "-c", "import flask_app; flask_app.seed()"], env)
    return env


def serve(
    app_process: Callable[..., AppProcess],
    receiver: OTLPReceiver | None,
    args: list[str],
    port: int,
    env: Mapping[str, str],
    *,
    ready: str,
    name: str = "web",
    cwd: str | None = None,
) -> tuple[AppProcess, str]:
    """Start ``args`` under the launcher (exporting to ``receiver``); wait until ``ready`` answers."""
    full = {"OTEL_SERVICE_NAME": name, "OTEL_PERF__RAISE_ERRORS": "1", **dict(env)}
    if receiver is not None:
        full |= receiver.exporter_env()
    else:
        full |= {
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        }
    proc = app_process([launcher(), *args], full, name=name, cwd=cwd)
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + ready, timeout=60)
    return proc, base


def new_port() -> int:
    return free_port()


def pythonpath(*parts: str | os.PathLike[str]) -> str:
    return os.pathsep.join(str(p) for p in parts if str(p))
