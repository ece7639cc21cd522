"""Every shipped PromQL expression against a live Prometheus scraping the instrumented demo app.

The demo app runs under ``otel-perf-instrument`` with ``OTEL_METRICS_EXPORTER=prometheus``, a real
Prometheus (2.42, exemplar storage on) scrapes it as job ``otel-perf-demo`` every second with the
recording and alerting rules of ``deploy/prometheus/rules`` loaded, and a bounded load touches
every demo behaviour (N+1, slow query, slow request, blocked loop, rate-limited upstream, 500s).
Then each expression of every dashboard panel, rule and datasource link (``exprs.all_promql``):

* runs as an instant query without error (it parses and type-checks);
* names only metrics Prometheus has, unless listed in :data:`MAY_BE_ABSENT`;
* returns data, unless listed in :data:`MAY_BE_EMPTY`.

Both lists are explicit, small, and say why. :data:`KNOWN_BUGS` holds expressions that are broken
today (strict xfail: the entry must go when the bug is fixed).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.prometheus import PrometheusError
from test_prometheus_exporter import SERVICE_NAME, LiveStack, live_demo_stack

from .exprs import all_promql, metric_names, rule_promql

JOB = SERVICE_NAME  # the scrape job name and OTEL_SERVICE_NAME of the demo app: "otel-perf-demo"
EXPRESSIONS = all_promql(job=JOB)

#: Expressions that may legitimately return nothing here (substring of "where" -> reason).
MAY_BE_EMPTY: dict[str, str] = {
    "panel 'Collector ": "the Collector's own telemetry; no Collector runs in this test",
    "(collector span metrics)": "the Collector's span_metrics connector; no Collector runs in this test",
    "alert CollectorExportFailing": "the Collector's own telemetry; no Collector runs in this test",
    "panel 'Custom operation": "the demo app measures no custom operations (otel_perf.measure)",
    "panel 'Connection timeouts'": "no pool checkout times out under this light load",
    "panel 'Dropped by the app'": "a healthy exporter drops nothing",
    "panel 'Export failures in the app'": "a healthy exporter does not fail",
    "alert PerfP95OverBudget": "fires only when a route's p95 exceeds its budget; the demo stays within",
    "alert PerfLatencyDegradation": "compares with a day earlier (offset 1d); the TSDB is fresh",
    "alert PerfDbPoolExhausted": "fires only when the pool is exhausted with waiters",
    "alert PerfMemoryHigh": "fires only above 80% of the memory limit",
    "alert PerfTelemetryExportFailing": "a healthy exporter does not fail",
    "alert PerfTelemetryDropping": "a healthy exporter drops nothing",
    "OverCriticalBudget": "fires only past a critical level; the demo stays under them",
    "alert PerfClientErrorRateOverBudget": "fires only when 4xx pass their budget for 10m",
    "alert PerfQueriesPerRequestOverBudget": "needs 10 minutes over the budget (for: 10m)",
    "alert PerfDbP95OverBudget": "fires only when a statement's p95 passes its db budget",
    "alert PerfSlowQueriesRising": "compares with the hour before; the TSDB is fresh",
    "alert PerfThrottledRising": "compares with the hour before; the TSDB is fresh",
    "alert PerfCpuHigh": "fires only near a full core for 10 minutes",
    "alert PerfAppDown": "every target is up",
    "alert PerfAppNoData": "compares with the hour before; the TSDB is fresh",
    "dashboard browser.json": "browser metrics come from real browsers; test_live_browser.py runs these "
    "against Chromium's data",
    "panel 'Cache ": "the demo app uses no cache; test_live_caches.py runs these against a Redis-backed app",
    "panel 'Redis command": "the demo app uses no Redis; test_live_caches.py runs these",
    "alert PerfCacheHitRatioLow": "the demo app uses no cache; test_live_caches.py runs it",
    "panel 'Job runs and failures' target B": "no background job of the demo fails",
    "panel 'Job queue wait": "its background tasks are not queued (a Celery measure); test_live_caches.py "
    "runs it against a Celery worker",
}

#: Metric names (or prefixes ending in "_") an expression may use that need not exist here -> reason.
MAY_BE_ABSENT: dict[str, str] = {
    "otelcol_": "the Collector's own telemetry; no Collector runs in this test",
    "traces_span_metrics_": "the Collector's span_metrics connector; no Collector runs in this test",
    "perf_operation_": "the demo app measures no custom operations",
    "db_client_connection_timeouts_total": "a counter series appears at the first pool timeout",
    "perf_telemetry_dropped_total": "a counter series appears at the first dropped item",
    "perf_telemetry_export_failures_total": "a counter series appears at the first failed export",
    "perf_browser_": "sent by browsers, not by the demo app; test_live_browser.py has them from Chromium",
    "perf_cache_": "the demo app uses no cache; test_live_caches.py has them from a Redis-backed app",
    "perf_job_queue_wait_": "recorded for Celery tasks only; test_live_caches.py has it from a worker",
}

#: Expressions broken today (substring of "where" -> the bug). Strict xfail: remove when fixed.
KNOWN_BUGS: dict[str, str] = {}


def _lookup(table: dict[str, str], where: str) -> str | None:
    return next((reason for key, reason in table.items() if key in where), None)


def _absent_allowed(name: str) -> bool:
    return any(name == key or (key.endswith("_") and name.startswith(key)) for key in MAY_BE_ABSENT)


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[LiveStack, set[str]]]:
    """The live stack with rules loaded, once recording rules produced series; plus every metric name
    Prometheus knows."""
    with live_demo_stack(rules=True) as stack:
        for record in _recorded_names():
            stack.prometheus.wait_for_query(record, timeout=20)
        names = set(stack.prometheus.api("label/__name__/values"))
        yield stack, names


def _recorded_names() -> list[str]:
    return sorted({where.rsplit("record ", 1)[1] for where, _ in rule_promql() if "record " in where})


def test_lists_name_real_expressions() -> None:
    """Every entry of the lists matches something shipped, so stale entries cannot pile up."""
    wheres = [where for where, _ in EXPRESSIONS]
    for table in (MAY_BE_EMPTY, KNOWN_BUGS):
        for key in table:
            assert any(key in where for where in wheres), f"{key!r} matches no shipped expression"
    used = {name for _, expr in EXPRESSIONS for name in metric_names(expr)}
    for key in MAY_BE_ABSENT:
        assert any(name == key or (key.endswith("_") and name.startswith(key)) for name in used), key


def _params() -> list[object]:
    out: list[object] = []
    for where, expr in EXPRESSIONS:
        bug = _lookup(KNOWN_BUGS, where)
        marks = [pytest.mark.xfail(reason=bug, strict=True)] if bug else []
        out.append(pytest.param(where, expr, marks=marks, id=where))
    return out


@pytest.mark.slow
@pytest.mark.prometheus
@pytest.mark.parametrize(("where", "expr"), _params())
def test_expression_runs_against_live_data(live: tuple[LiveStack, set[str]], where: str, expr: str) -> None:
    stack, known = live
    try:
        result = stack.prometheus.query(expr)
    except PrometheusError as exc:
        pytest.fail(f"{where}\n  does not run: {exc}\n  expr: {expr}", pytrace=False)

    missing = sorted(name for name in metric_names(expr) if name not in known and not _absent_allowed(name))
    assert not missing, (
        f"{where}\n  uses metric(s) Prometheus never received from the app: {missing}\n  expr: {expr}"
    )

    if _lookup(MAY_BE_EMPTY, where) is None:
        assert result, f"{where}\n  returned no data against the live demo app\n  expr: {expr}"
