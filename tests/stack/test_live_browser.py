"""The Browser dashboard's PromQL against a real Prometheus holding real browser data.

Headless Chromium loads a page of an app under ``otel-perf-instrument`` a few times (with a click
and one uncaught error); the browser script's OTLP/JSON metrics reach a real OTLP receiver and are
exposed the way the collector's ``prometheus`` exporter would (``support.otlp_prometheus``), next
to the app's own Prometheus endpoint. Prometheus scrapes both; then every expression of every
Browser panel runs, names only metrics Prometheus has, and returns data.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import AppProcess, OTLPReceiver, free_port
from support.chromium import Chromium, Page, chromium_path, start_chromium
from support.launch import APPS, launcher
from support.otlp_prometheus import ExpositionServer
from support.procs import skip_or_fail
from support.prometheus import PrometheusServer, prometheus_path, start_prometheus

from .exprs import concretize, dashboard_promql, metric_names

pytestmark = [pytest.mark.slow, pytest.mark.chromium, pytest.mark.prometheus]
SERVER_JOB = "shop"
BROWSER_JOB = "shop-browser"
VISITS = 3
BIN = Path(sys.executable).parent


def _fetch_spans(receiver: OTLPReceiver) -> int:
    return len([s for s in receiver.spans(kind="CLIENT") if s.resource.get("service.name") == BROWSER_JOB])


def _visit(page: Page, base: str, receiver: OTLPReceiver, *, error: bool = False) -> None:
    before = _fetch_spans(receiver)
    page.navigate(base + "/")
    page.wait_for("document.getElementById('out').textContent === 'seven'", what="the page's fetch")
    # The fetch span ends (and its duration is recorded) once its resource timing is in.
    receiver.wait_for(lambda: _fetch_spans(receiver) > before, what="the visit's fetch span")
    page.wait_for("performance.getEntriesByType('paint').length > 0", what="the first paint")
    if error:  # an uncaught error, thrown outside of the evaluation so the page's handlers see it
        page.evaluate("setTimeout(() => { throw new TypeError('boom from the test') }), true")
    page.click("#go")
    page.wait_for("document.getElementById('title').textContent.includes('refreshed')", what="the click")
    # The browser records the interaction once the next frame is shown; a person does not leave sooner.
    page.wait_for("performance.getEntriesByType('first-input').length > 0", what="the interaction's timing")
    page.navigate("about:blank")


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[PrometheusServer, OTLPReceiver]]:
    binary = chromium_path()
    if binary is None:
        skip_or_fail("chromium not installed (Debian package chromium)")
    if prometheus_path() is None:
        skip_or_fail("prometheus binary not installed (Debian package prometheus)")
    tmp = Path(tempfile.mkdtemp(prefix="otel-perf-live-browser-"))
    with OTLPReceiver() as receiver, ExpositionServer(receiver.metric_points) as collector:
        port, metrics_port = free_port(), free_port()
        env = {
            **receiver.exporter_env(),
            "OTEL_SERVICE_NAME": SERVER_JOB,
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_PERF__RAISE_ERRORS": "1",
            "OTEL_PERF_BROWSER_ENDPOINT": receiver.endpoint,
            "APP_DATABASE_URL": f"sqlite:///{tmp / 'items.db'}",
            "APP_COLLECTOR": receiver.endpoint,
            "PYTHONPATH": str(APPS),
        }
        args = [
            launcher(),
            str(BIN / "uvicorn"),
            "browser_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        with AppProcess(args, env, name="browser-app") as app:
            base = f"http://127.0.0.1:{port}"
            app.wait_http(base + "/hello", timeout=30)
            config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": SERVER_JOB, "scrape_interval": "1s", "scrape_timeout": "1s",
                     "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]},
                    {"job_name": "otel-apps", "honor_labels": True, "scrape_interval": "1s",
                     "scrape_timeout": "1s", "static_configs": [{"targets": [collector.target]}]},
                ],
            }  # fmt: skip
            prometheus = start_prometheus(config=config)
            browser: Chromium = start_chromium(binary)
            try:
                prometheus.wait_for_target_up(timeout=30)
                page = browser.new_page()
                # A first visit, scraped, then the rest: counters rise between scrapes, so rate() sees them.
                _visit(page, base, receiver)
                count = f'perf_browser_lcp_seconds_count{{job="{BROWSER_JOB}"}}'
                prometheus.wait_for_query(count, timeout=30)
                for i in range(1, VISITS):
                    _visit(page, base, receiver, error=i == VISITS - 1)
                receiver.wait_for(
                    lambda: receiver.histogram_count("perf.browser.lcp") >= VISITS, what="every visit's LCP"
                )
                prometheus.wait_for_query(count, lambda r: bool(r) and float(r[0]["value"][1]) >= VISITS)
                for name in ("perf_browser_errors_total", "perf_browser_inp_seconds_count"):
                    # rate() needs two samples of a series: wait for three scrapes of the newest ones.
                    prometheus.wait_for_query(
                        f'count_over_time({name}{{job="{BROWSER_JOB}"}}[1m]) >= 3', timeout=30
                    )
                yield prometheus, receiver
            finally:
                browser.stop()
                prometheus.stop()


def _browser_panels() -> list[tuple[str, str]]:
    return [(where, expr) for where, expr in dashboard_promql() if "browser.json" in where]


def test_the_browser_dashboard_has_expressions() -> None:
    assert len(_browser_panels()) >= 12


@pytest.mark.parametrize(("where", "expr"), _browser_panels())
def test_browser_panel_runs_against_real_browser_data(
    stack: tuple[PrometheusServer, OTLPReceiver], where: str, expr: str
) -> None:
    prometheus, _ = stack
    query = concretize(expr, job=SERVER_JOB, browser=BROWSER_JOB)
    known = set(prometheus.api("label/__name__/values"))
    missing = sorted(name for name in metric_names(query) if name not in known)
    assert not missing, f"{where}\n  uses metric(s) Prometheus does not have: {missing}\n  expr: {query}"
    result = prometheus.query(query)
    assert result, f"{where}\n  returned no data against real browser data\n  expr: {query}"


def test_api_calls_line_up_with_the_servers_route(stack: tuple[PrometheusServer, OTLPReceiver]) -> None:
    prometheus, _ = stack
    [both] = [
        expr for where, expr in _browser_panels() if "browser vs server" in where and "target B" in where
    ]
    result: list[Any] = prometheus.query(concretize(both, job=SERVER_JOB, browser=BROWSER_JOB))
    # The server's /api/items/{item_id} is the browser's /api/items/{id}; routes the browser
    # never called (/, /page.js, /hello) are left out.
    assert [r["metric"]["url_template"] for r in result] == ["/api/items/{id}"]


def test_the_uncaught_error_is_an_exception_event_on_the_page_load(
    stack: tuple[PrometheusServer, OTLPReceiver],
) -> None:
    _, receiver = stack
    events = receiver.wait_for(  # the fixture waited for metrics: the spans leave in exports of their own
        lambda: [e for s in receiver.spans("page load") for e in s.events if e.name == "exception"],
        what="the exception event on a page load span",
    )
    assert len(events) == 1, receiver.dump()
    assert events[0].attributes["exception.type"] == "TypeError"
    assert events[0].attributes["exception.message"] == "boom from the test"
    assert "exception.stacktrace" in events[0].attributes
