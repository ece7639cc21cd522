"""Issue 16: SIGTERM right after the last request loses nothing, in every server model.

A deploy or an autoscaler stops a server with SIGTERM.  Current uvicorn catches it, shuts
down gracefully, then raises it again with the handler that was there before (under
gunicorn's uvicorn worker: the default), so the worker died before ``atexit``: the last
partial span batch and every metric point since the last export were lost.  Here the
exporters keep their production intervals (5 s span batches, 60 s metric exports), the
server is stopped right after the last answer, and the exported counts must be exact —
several times over, since the loss depended on timing.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence

import httpx
import pytest

from support.launch import APPS, BIN, launcher
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, free_port

pytestmark = pytest.mark.slow

ROUTE = "/items/{item_id}"
N = 150
ROUNDS = 3


def _run_and_stop(
    app_process: Callable[..., AppProcess], receiver: OTLPReceiver, server: Sequence[str], port: int
) -> int:
    proc = app_process(
        [launcher(), *server],
        {
            "OTEL_SERVICE_NAME": "stopping",
            "PYTHONPATH": str(APPS),
            "APP_PORT": str(port),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_PERF_SHUTDOWN_TIMEOUT": "10",
        },
        name="server",
    )
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + "/hello", timeout=60)
    receiver.clear()
    for i in range(N):
        with httpx.Client() as client:  # a new connection each: the requests spread over the workers
            assert client.get(f"{base}/items/{i % 3 + 1}").status_code == 200
    proc.send_signal(signal.SIGTERM)
    proc.wait_exit(timeout=30)
    return N


def _check(receiver: OTLPReceiver, n: int) -> None:
    spans = len(receiver.spans(name=f"GET {ROUTE}", kind="SERVER"))
    count = receiver.histogram_count("http.server.request.duration", {"http.route": ROUTE})
    logs = len(receiver.logs("fetching item"))
    assert (spans, count, logs) == (n, n, n), f"(spans, metric count, logs) after SIGTERM; sent {n}"


SERVERS = {
    "uvicorn": lambda port: [str(BIN / "uvicorn"), "workers_app:app", "--port", str(port)],
    "uvicorn-workers": lambda port: [
        str(BIN / "uvicorn"), "workers_app:app", "--port", str(port), "--workers", "2"
    ],
    "gunicorn-uvicorn-worker": lambda port: [
        str(BIN / "gunicorn"), "-w", "2", "-k", "uvicorn.workers.UvicornWorker",
        "-b", f"127.0.0.1:{port}", "workers_app:app",
    ],
    "gunicorn-uvicorn-worker-preload": lambda port: [
        str(BIN / "gunicorn"), "--preload", "-w", "2", "-k", "uvicorn.workers.UvicornWorker",
        "-b", f"127.0.0.1:{port}", "workers_app:app",
    ],
}  # fmt: skip


@pytest.mark.parametrize("server", list(SERVERS))
def test_sigterm_after_the_last_request_exports_everything(
    server: str, otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess]
) -> None:
    for _ in range(ROUNDS):
        port = free_port()
        n = _run_and_stop(app_process, otlp_receiver, SERVERS[server](port), port)
        _check(otlp_receiver, n)
