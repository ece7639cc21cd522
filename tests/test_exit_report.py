"""Issue 16: an exit report never calls a process that recorded nothing HEALTHY.

It says ``no requests recorded`` plainly, with what is known about why (no app of a framework
we instrument, the server stopped before it served); supervisors (gunicorn's arbiter) print
no report of their own.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from support.launch import BIN, launcher
from support.procs import AppProcess, clean_environ, free_port

QUIET = {
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_PERF_REPORT": "true",
}


def test_a_process_without_an_app_says_no_requests_recorded() -> None:
    out = subprocess.run(
        [launcher(), str(BIN / "python"), "-c", "print('done')"],
        env=clean_environ(QUIET),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "no requests recorded" in out.stderr
    assert "no app of a framework we instrument" in out.stderr
    assert "HEALTHY" not in out.stderr


@pytest.mark.slow
def test_an_app_that_fails_to_load_is_reported_once_per_worker_not_healthy(
    tmp_path: Path, app_process: Callable[..., AppProcess]
) -> None:
    (tmp_path / "broken.py").write_text("import greenlet_that_is_missing  # noqa\napp = None\n")
    port = free_port()
    proc = app_process(
        [launcher(), str(BIN / "gunicorn"), "-w", "2", "-k", "uvicorn.workers.UvicornWorker",
         "-b", f"127.0.0.1:{port}", "--chdir", str(tmp_path), "broken:app"],
        QUIET,
    )  # fmt: skip
    proc.wait_exit(timeout=60)
    err = proc.stderr()
    assert "HEALTHY" not in err
    reports = err.count("otel-perf report:")
    assert 1 <= reports <= 2, err[-3000:]  # one per worker that booted, none from the arbiter
    assert err.count("no requests recorded") == reports


@pytest.mark.slow
def test_uvicorn_that_cannot_load_the_app_names_it(
    tmp_path: Path, app_process: Callable[..., AppProcess]
) -> None:
    (tmp_path / "broken.py").write_text("raise ImportError('no greenlet')\n")
    proc = app_process(
        [launcher(), str(BIN / "uvicorn"), "--app-dir", str(tmp_path), "broken:app",
         "--port", str(free_port())],
        QUIET,
    )
    proc.wait_exit(timeout=60)
    err = proc.stderr()
    assert err.count("otel-perf report:") == 1, err[-3000:]
    assert "no requests recorded" in err and "HEALTHY" not in err
