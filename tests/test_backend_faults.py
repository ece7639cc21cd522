"""Issue 7: backend faults over real sockets.

The sample service runs under the launcher while its OTLP endpoint refuses connections,
accepts and never answers, answers slowly, or answers 503/429.  In every case the app keeps
answering, queues stay bounded, what is dropped is counted (stats endpoint ``telemetry``
section and the ``perf.telemetry.*`` metrics), warnings come once per interval, exit is
bounded by ``OTEL_PERF_SHUTDOWN_TIMEOUT``, and export resumes by itself when the backend is
back.  Latency and throughput under faults are measured by ``bench/faults.py``, not here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.launch import Service, launcher, sqlite_urls, start_service
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, clean_environ, free_port

pytestmark = pytest.mark.slow

TOKEN = "stats-token-for-fault-tests"
SERVER_SPAN = "GET /items/{item_id}"


def _exporting_to(endpoint: str, **extra: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_PERF_STATS_PATH": "/_perf",
        "OTEL_PERF_STATS_TOKEN": TOKEN,
        **extra,
    }


def _telemetry(svc: Service) -> dict[str, dict[str, float]]:
    r = httpx.get(svc.base + "/_perf", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert r.status_code == 200, r.text
    telemetry: dict[str, dict[str, float]] = r.json()["telemetry"]
    return telemetry


def _requests(svc: Service, n: int) -> None:
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            r = client.get(f"{svc.base}/items/{i % 20 + 1}")
            assert r.status_code == 200, r.text


def _wait(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def _lines(proc: AppProcess, text: str) -> int:
    return sum(text in line for line in proc.stderr().splitlines())


def test_refused_connections_are_counted_rate_limited_and_export_resumes(
    app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here until the "collector comes back" below
    svc = start_service(
        app_process,
        None,
        sqlite_urls(tmp_path)[0],
        env=_exporting_to(f"http://127.0.0.1:{port}", OTEL_EXPORTER_OTLP_TIMEOUT="1"),
    )

    def failing() -> bool:
        _requests(svc, 5)  # the app keeps answering with the collector down
        t = _telemetry(svc)
        return all(
            t[s]["export_failures"] >= 2 and t[s]["dropped"] > 0 for s in ("traces", "metrics", "logs")
        )

    _wait(failing, "two failed exports of every signal, counted in the stats endpoint", timeout=40)
    # One warning per signal and interval (OTEL_PERF_WARN_INTERVAL=60 s), not one per failed batch.
    for s in ("traces", "metrics", "logs"):
        assert _lines(svc.proc, f"otel-perf: exporting {s} failed") == 1, svc.proc.stderr()[-3000:]
    assert _lines(svc.proc, "Failed to export spans batch") <= 1
    transient = [line[:130] for line in svc.proc.stderr().splitlines() if "Transient error" in line]
    assert len(transient) <= 3, "\n".join(transient)  # the SDK's retry warnings, one per signal at most

    with OTLPReceiver(port=port) as receiver:  # the collector is back: no restart needed
        _requests(svc, 5)
        receiver.wait_for_spans(5, name=SERVER_SPAN, kind="SERVER", timeout=20)
        # An export collected during the outage may arrive first (retried): wait for a later one.
        receiver.wait_for(
            lambda: receiver.sum_value("perf.telemetry.export.failures", signal="traces") >= 2,
            what="perf.telemetry.export.failures exported after the outage",
        )
        assert receiver.sum_value("perf.telemetry.dropped", signal="traces") > 0
        assert receiver.sum_value("perf.telemetry.dropped", signal="logs") > 0
        t = _telemetry(svc)
        assert t["traces"]["exported"] >= 5
        assert t["traces"]["dropped"] >= receiver.sum_value("perf.telemetry.dropped", signal="traces")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_black_holed_collector_bounded_queues_and_bounded_shutdown(
    stop: signal.Signals, otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    otlp_receiver.mode = "stall"  # accepts, reads the request, never answers
    svc = start_service(
        app_process,
        None,
        sqlite_urls(tmp_path)[0],
        env=_exporting_to(
            otlp_receiver.endpoint, OTEL_PERF_QUEUE_SIZE="16", OTEL_PERF_SHUTDOWN_TIMEOUT="1.5"
        ),
    )
    _requests(svc, 60)  # 120 spans and 60 log records against queues of 16
    otlp_receiver.wait_for(lambda: otlp_receiver.request_count("/v1/traces"), what="a stalled trace export")

    def dropping() -> dict[str, dict[str, float]] | None:
        t = _telemetry(svc)
        return t if t["traces"]["dropped"] > 0 and t["logs"]["dropped"] > 0 else None

    t = _wait(dropping, "spans and log records dropped by the full queues")
    for s in ("traces", "logs"):
        assert t[s]["queue_capacity"] == 16
        assert 0 <= t[s]["queue_size"] <= 16
    assert t["traces"]["dropped"] >= 120 - 2 * 16 - 1  # at most one queue and one batch were kept
    assert t["logs"]["dropped"] >= 60 - 2 * 16 - 1

    start = time.monotonic()
    svc.proc.send_signal(stop)
    svc.proc.wait_exit(30)
    elapsed = time.monotonic() - start
    # Without the bound, flushing waits out the exporter's 10 s timeout for every pending batch.
    assert elapsed < 1.5 + 1.0 + 2.5, f"exit took {elapsed:.1f}s"
    # Said once: the server's flush ran out of time, so the exit waits at most a second more
    assert svc.proc.stderr().count("did not finish within OTEL_PERF_SHUTDOWN_TIMEOUT=1.5s") == 1
    # The bounded flush holds the event loop's thread: not reported as the app blocking the loop
    assert "event loop blocked" not in svc.proc.stderr()


def test_script_exit_is_bounded_when_the_collector_black_holes(otlp_receiver: OTLPReceiver) -> None:
    """A plain ``python script.py`` (atexit path, no server) exits within the default timeout."""
    otlp_receiver.mode = "stall"
    code = (
        "from opentelemetry import trace\n"
        "tracer = trace.get_tracer('script')\n"
        "for i in range(50):\n"
        "    tracer.start_span(f'work {i}').end()\n"
        "import logging; logging.getLogger('script').warning('done')\n"
    )
    env = clean_environ({**otlp_receiver.exporter_env(), "OTEL_PERF__RAISE_ERRORS": "1"})
    start = time.monotonic()
    result = subprocess.run(
        [launcher(), sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-3000:]
    assert otlp_receiver.request_count("/v1/traces") >= 1  # it did try, and the collector swallowed it
    assert elapsed < 3.0 + 5.0, f"exit took {elapsed:.1f}s (OTEL_PERF_SHUTDOWN_TIMEOUT defaults to 3 s)"
    assert "did not finish within OTEL_PERF_SHUTDOWN_TIMEOUT=3.0s" in result.stderr


def test_503_429_and_slow_answers_then_recovery(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    otlp_receiver.mode = "status:503"
    svc = start_service(
        app_process,
        None,
        sqlite_urls(tmp_path)[0],
        env=_exporting_to(otlp_receiver.endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="2"),
    )
    _requests(svc, 10)
    _wait(lambda: _telemetry(svc)["traces"]["export_failures"] >= 1, "a trace export failed on 503")
    assert any(r.mode == "status:503" for r in otlp_receiver.requests("/v1/traces"))

    otlp_receiver.retry_after = 1
    otlp_receiver.mode = "status:429"
    before = _telemetry(svc)["traces"]["export_failures"]
    _requests(svc, 10)
    _wait(lambda: _telemetry(svc)["traces"]["export_failures"] > before, "a trace export failed on 429")
    assert any(r.mode == "status:429" for r in otlp_receiver.requests("/v1/traces"))
    assert _lines(svc.proc, "otel-perf: exporting traces failed") == 1

    otlp_receiver.mode = "slow:0.5"
    otlp_receiver.clear()
    _requests(svc, 5)
    otlp_receiver.wait_for_spans(5, name=SERVER_SPAN, kind="SERVER", timeout=30)

    otlp_receiver.mode = "ok"
    _requests(svc, 5)
    otlp_receiver.wait_for_spans(10, name=SERVER_SPAN, kind="SERVER", timeout=20)
    assert otlp_receiver.wait_for(
        lambda: otlp_receiver.sum_value("perf.telemetry.export.failures", signal="traces") >= 2,
        what="the failures of the outage in perf.telemetry.export.failures",
    )
    t = _telemetry(svc)
    assert t["traces"]["dropped"] >= 1
    assert t["traces"]["exported"] >= 10
