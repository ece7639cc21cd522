"""Issue 18: a Celery worker with a Redis broker, both ends under the launcher.

The app (tests/apps/data_app.py) sends ``data.lookup_items`` (7 sqlite3 statements, an N+1, and a
task log record) from a request; a worker (``celery worker --pool solo``) runs it.  Producer and
consumer spans are one trace with the request; the worker exports ``perf.job.duration`` and
``perf.job.queue_wait`` for the task, the N+1 inside it, and the task's log record with its trace
id; a failing task is counted by its exception; the worker's exit report lists its jobs.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support.launch import APPS, BIN, launcher
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess
from support.redis import RedisServer
from test_drivers_e2e import start_data_app, trace_of

pytestmark = pytest.mark.slow
TASK = "data.lookup_items"


def start_worker(
    app_process: Callable[..., AppProcess],
    broker: str,
    sqlite_path: Path,
    env: dict[str, str],
    pool: tuple[str, ...] = ("--pool", "solo"),
) -> AppProcess:
    """A Celery worker for tests/apps/celery_tasks.py under the launcher; returns once it is ready."""
    full = {
        "OTEL_SERVICE_NAME": "worker",
        "OTEL_PERF__RAISE_ERRORS": "1",
        "OTEL_PERF_REPORT": "true",
        **env,
        "APP_BROKER_URL": broker,
        "APP_SQLITE_PATH": str(sqlite_path),
        "PYTHONPATH": str(APPS),
    }
    args = [
        launcher(), str(BIN / "celery"), "-A", "celery_tasks", "worker", *pool,
        "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
    ]  # fmt: skip
    worker = app_process(args, full, name="worker")
    deadline = time.monotonic() + 30
    while "ready." not in worker.output():
        assert worker.is_running, worker.output()
        assert time.monotonic() < deadline, f"the worker did not get ready:\n{worker.output()}"
        time.sleep(0.1)
    return worker


@pytest.mark.matrix
def test_a_task_is_a_job_in_the_senders_trace_with_its_metrics_findings_and_logs(
    redis_server: RedisServer,
    otlp_receiver: OTLPReceiver,
    app_process: Callable[..., AppProcess],
    tmp_path: Path,
) -> None:
    broker = redis_server.url(9)
    svc = start_data_app(app_process, otlp_receiver, tmp_path, APP_BROKER_URL=broker)  # creates the table
    worker = start_worker(app_process, broker, tmp_path / "data.db", otlp_receiver.exporter_env())
    trace_id = trace_of(httpx.get(svc.base + "/celery/send", params={"n": 6}))
    assert trace_of(httpx.get(svc.base + "/celery/fail"))

    consumer = otlp_receiver.wait_for(
        lambda: otlp_receiver.spans(f"run/{TASK}", "CONSUMER", trace_id=trace_id),
        what="the consumer span",
        timeout=30,
    )[0]
    # The sender's spans come in its own exports: the worker's consumer span may arrive first.
    producer = otlp_receiver.wait_for(
        lambda: otlp_receiver.spans(f"apply_async/{TASK}", "PRODUCER", trace_id=trace_id), what="producer"
    )[0]
    request = otlp_receiver.wait_for(
        lambda: [s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "SERVER"], what="request"
    )[0]
    assert producer.parent_span_id == request.span_id and consumer.parent_span_id == producer.span_id
    assert consumer.resource["service.name"] == "worker"
    assert consumer.attributes["perf.db.query_count"] == 7
    [n_plus_one] = [e for e in consumer.events if e.name == "perf.n_plus_one"]
    assert n_plus_one.attributes["perf.db.repeat_count"] == 6
    statements = [
        s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "CLIENT" and s.name == "SELECT items"
    ]
    assert len(statements) == 7 and {s.parent_span_id for s in statements} == {consumer.span_id}

    job = {"perf.job.system": "celery", "perf.job.name": TASK}
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("perf.job.duration", job) == 1, what="duration"
    )
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("perf.job.queue_wait", job) == 1, what="wait"
    )
    otlp_receiver.wait_for(lambda: otlp_receiver.histogram_sum("perf.job.queries", job) == 7, what="queries")
    failed = {"perf.job.name": "data.fails", "error.type": "ValueError"}
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("perf.job.duration", failed) == 1, what="failure"
    )
    otlp_receiver.wait_for(
        lambda: otlp_receiver.sum_value("perf.n_plus_one", {"http.route": TASK}) == 1, what="N+1 counter"
    )

    record = otlp_receiver.wait_for_logs("looked up 6 items")[0]
    assert record.trace_id == trace_id and record.span_id == consumer.span_id
    assert record.resource["service.name"] == "worker"

    worker.send_signal(signal.SIGTERM)
    worker.wait_exit(timeout=30)
    report = worker.output()
    assert "Jobs:" in report
    line = next(x for x in report.splitlines() if x.startswith(f"celery {TASK}"))
    assert line.split()[2] == "1"  # one run
    assert "N+1 on celery data.lookup_items" in report


def test_a_prefork_pool_process_exports_its_tasks_before_it_is_recycled(
    redis_server: RedisServer,
    otlp_receiver: OTLPReceiver,
    app_process: Callable[..., AppProcess],
    tmp_path: Path,
) -> None:
    """Celery's default pool: a process ends with os._exit (no atexit), here after each task.
    With batches that would leave only after a minute, the task's span, job metrics and log
    record arrive: the process exported them as it left."""
    broker = redis_server.url(10)
    svc = start_data_app(app_process, otlp_receiver, tmp_path, APP_BROKER_URL=broker)
    later = {"OTEL_BSP_SCHEDULE_DELAY": "60000", "OTEL_BLRP_SCHEDULE_DELAY": "60000",
             "OTEL_METRIC_EXPORT_INTERVAL": "60000"}  # fmt: skip
    start_worker(
        app_process, broker, tmp_path / "data.db", {**otlp_receiver.exporter_env(), **later},
        pool=("--pool", "prefork", "--concurrency", "1", "--max-tasks-per-child", "1"),
    )  # fmt: skip
    trace_id = trace_of(httpx.get(svc.base + "/celery/send", params={"n": 2}))
    consumer = otlp_receiver.wait_for(
        lambda: otlp_receiver.spans(f"run/{TASK}", "CONSUMER", trace_id=trace_id),
        what="the consumer span of the recycled process",
        timeout=30,
    )[0]
    assert consumer.attributes["perf.db.query_count"] == 3
    job = {"perf.job.system": "celery", "perf.job.name": TASK}
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("perf.job.duration", job) == 1, what="duration"
    )
    record = otlp_receiver.wait_for_logs("looked up 2 items")[0]
    assert record.trace_id == trace_id and record.span_id == consumer.span_id
