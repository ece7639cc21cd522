"""The cache and job-queue PromQL the stack ships, against a live Prometheus with real data.

The demo app of test_live_promql.py uses no cache and queues no Celery task, so the expressions
it may find empty there run here: tests/apps/data_app.py (Redis cache reads under a 0.8 floor,
54.5% hits) and a Celery worker (tasks sent by that app through a Redis broker), both under the
launcher with ``OTEL_METRICS_EXPORTER=prometheus``, scraped by a real Prometheus with the rule
files loaded.  Each expression must run and return data; the hit-ratio alert's condition holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support.launch import APPS, BIN, launcher
from support.procs import AppProcess, free_port
from support.prometheus import prometheus_path, scrape_config, start_prometheus
from support.redis import RedisServer
from test_celery_e2e import start_worker

from .exprs import RULES_DIR, all_promql

pytestmark = [pytest.mark.slow, pytest.mark.prometheus]
JOB = "otel-perf-data"
#: the expressions this test owns (test_live_promql.py lets them be empty)
WHERE = ("panel 'Cache ", "panel 'Redis command", "alert PerfCacheHitRatioLow", "panel 'Job queue wait")
EXPRESSIONS = [(w, e) for w, e in all_promql(job=JOB) if any(key in w for key in WHERE)]


def test_the_expressions_are_found() -> None:
    assert len(EXPRESSIONS) == 6, [w for w, _ in EXPRESSIONS]  # 2 + 1 + 1 panel targets, the alert, 1


def test_cache_and_queue_expressions_return_live_data(
    redis_server: RedisServer, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    if prometheus_path() is None:
        from support.procs import skip_or_fail

        skip_or_fail("prometheus binary not installed (Debian package prometheus)")
    app_port, app_metrics, worker_metrics = free_port(), free_port(), free_port()
    common = {
        "OTEL_SERVICE_NAME": JOB,
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_PERF__RAISE_ERRORS": "1",
        "APP_SQLITE_PATH": str(tmp_path / "data.db"),
        "APP_REDIS_URL": redis_server.url(7),
        "APP_BROKER_URL": redis_server.url(8),
    }
    app = app_process(
        [launcher(), str(BIN / "uvicorn"), "data_app:app", "--host", "127.0.0.1", "--port", str(app_port)],
        {**common, "OTEL_EXPORTER_PROMETHEUS_PORT": str(app_metrics), "PYTHONPATH": str(APPS)},
        name="data",
    )
    base = f"http://127.0.0.1:{app_port}"
    app.wait_http(base + "/hello", timeout=30)
    worker = start_worker(
        app_process,
        redis_server.url(8),
        tmp_path / "data.db",
        {**common, "OTEL_SERVICE_NAME": JOB, "OTEL_EXPORTER_PROMETHEUS_PORT": str(worker_metrics)},
    )
    config = scrape_config(
        [f"127.0.0.1:{app_metrics}", f"127.0.0.1:{worker_metrics}"], job=JOB, scrape_interval="1s"
    )
    config["rule_files"] = [str(p) for p in sorted(RULES_DIR.glob("*.yml"))]
    prometheus = start_prometheus(config=config)
    try:
        prometheus.wait_for_target_up(timeout=30)
        for round_ in range(10):  # 110 cache reads, 60 hits (over 0.1 reads/s in 10 min); 10 tasks
            assert httpx.get(base + "/redis/sequence").status_code == 200
            assert httpx.get(base + "/celery/send", params={"n": 2}).status_code == 200
            if round_ == 0:
                # Prometheus holds the first round before the rest: every rate() then sees an
                # increase, not only a series that appeared with its final value in one scrape.
                for first in ("perf_cache_operations_total", "perf_job_queue_wait_seconds_count"):
                    prometheus.wait_for_query(f'sum({first}{{job="{JOB}"}}) >= 1', timeout=30)
        prometheus.wait_for_query(f'sum(perf_job_queue_wait_seconds_count{{job="{JOB}"}}) >= 10', timeout=30)
        prometheus.wait_for_query(f'sum(perf_cache_operations_total{{job="{JOB}"}}) >= 110', timeout=30)
        time.sleep(2)  # two more scrapes: every rate has two points
        for where, expr in EXPRESSIONS:
            assert prometheus.query(expr), (
                f"{where}\n  returned no data\n  expr: {expr}\n{worker.output()[-2000:]}"
            )
        ratio = prometheus.query_value(
            f'sum(perf_cache_operations_total{{job="{JOB}",perf_cache_result="hit"}})'
            f' / sum(perf_cache_operations_total{{job="{JOB}"}})'
        )
        assert ratio == pytest.approx(60 / 110)
    finally:
        prometheus.stop()
