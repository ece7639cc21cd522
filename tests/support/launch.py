"""Starting the sample service under the real ``otel-perf-instrument`` command."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, free_port

APPS = Path(__file__).resolve().parent.parent / "apps"
BIN = Path(sys.executable).parent


def launcher() -> str:
    """The installed launcher script next to this interpreter."""
    path = BIN / "otel-perf-instrument"
    if not path.exists():
        raise RuntimeError(f"{path} missing: install the package first (pip install -e '.[dev]')")
    return str(path)


@dataclass
class Service:
    proc: AppProcess
    base: str


def sqlite_urls(tmp_path: Path) -> tuple[str, str]:
    db = tmp_path / "app.db"
    return f"sqlite:///{db}", f"sqlite+aiosqlite:///{db}"


def start_service(
    app_process: Callable[..., AppProcess],
    receiver: OTLPReceiver | None,
    db_url: str,
    *,
    async_db_url: str = "",
    peer: str = "",
    env: Mapping[str, str] | None = None,
    name: str = "service",
    server: tuple[str, ...] = (),
    python_path: str = "",
    port: int | None = None,
) -> Service:
    """Run tests/apps/service.py under the launcher with uvicorn; wait until it answers.

    ``server`` replaces the uvicorn command line; it must listen on ``port`` then.
    """
    port = port or free_port()
    full: dict[str, Any] = {
        "OTEL_SERVICE_NAME": name,
        "OTEL_PERF__RAISE_ERRORS": "1",
        "APP_DATABASE_URL": db_url,
        "APP_ASYNC_DATABASE_URL": async_db_url,
        "APP_PEER_URL": peer,
        # a caller's PYTHONPATH (a checkout's src, ahead of an installed copy) kept
        "PYTHONPATH": os.pathsep.join(
            p for p in (python_path, str(APPS), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    if receiver is not None:
        full |= receiver.exporter_env()
    else:
        full |= {
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        }
    full |= dict(env or {})
    args = server or (str(BIN / "uvicorn"), "service:app", "--host", "127.0.0.1", "--port", str(port))
    proc = app_process([launcher(), *args], full, name=name)
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + "/hello", timeout=30)
    return Service(proc, base)
