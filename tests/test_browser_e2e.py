"""Real browsers, one trace: headless Chromium loads a page served under ``otel-perf-instrument``
with the browser script, and a real OTLP receiver on loopback (answering CORS preflights) gets the
page load, its Web Vitals and the fetch call, in the traces of the server's SERVER spans."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import AppProcess, OTLPReceiver, Span, closed_port, free_port
from support.chromium import Chromium, Page, chromium_path, start_chromium
from support.launch import APPS, BIN, launcher
from support.procs import skip_or_fail

pytestmark = [pytest.mark.slow, pytest.mark.chromium]
AppFactory = Callable[..., AppProcess]


@pytest.fixture
def chromium() -> Iterator[Chromium]:
    binary = chromium_path()
    if binary is None:
        skip_or_fail("chromium not installed (Debian package chromium)")
    browser = start_chromium(binary)
    try:
        yield browser
    finally:
        browser.stop()


def _start_app(app_process: AppFactory, tmp_path: Path, endpoint: str, receiver: OTLPReceiver | None) -> str:
    port = free_port()
    env = {
        "OTEL_SERVICE_NAME": "shop",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
        "OTEL_PERF__RAISE_ERRORS": "1",
        "OTEL_PERF_BROWSER_ENDPOINT": endpoint,
        "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'items.db'}",
        "APP_COLLECTOR": endpoint,
        "PYTHONPATH": str(APPS),
    }
    if receiver is not None:
        env |= receiver.exporter_env()
    else:
        env |= {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
    args = [launcher(), str(BIN / "uvicorn"), "browser_app:app", "--host", "127.0.0.1", "--port", str(port)]
    proc = app_process(args, env, name="browser-app")
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + "/hello", timeout=30)
    return base


def _browser_client_spans(receiver: OTLPReceiver) -> list[Span]:
    return [s for s in receiver.spans(kind="CLIENT") if s.resource.get("service.name") == "shop-browser"]


def _visit(page: Page, base: str, receiver: OTLPReceiver) -> None:
    """Load the page, wait for its fetch span to be exported, click, then leave (pagehide flushes)."""
    page.navigate(base + "/")
    page.wait_for("document.getElementById('out').textContent === 'seven'", what="the page's fetch")
    receiver.wait_for(lambda: _browser_client_spans(receiver), what="the browser's fetch span")
    page.wait_for("performance.getEntriesByType('paint').length > 0", what="the first paint")
    page.click("#go")
    page.wait_for("document.getElementById('title').textContent.includes('refreshed')", what="the click")
    page.wait_for("document.getElementById('xhr').textContent === 'seven'", what="the button's XHR")
    receiver.wait_for(lambda: len(_browser_client_spans(receiver)) >= 2, what="the browser's XHR span")
    # The browser records the interaction once the next frame is shown; a person does not leave sooner.
    page.wait_for("performance.getEntriesByType('first-input').length > 0", what="the interaction's timing")
    page.navigate("about:blank")


def _one(spans: list[Span], what: str) -> Span:
    assert len(spans) == 1, f"expected one {what}, got {spans}"
    return spans[0]


def test_page_load_and_fetch_join_the_server_traces(
    otlp_receiver: OTLPReceiver, app_process: AppFactory, chromium: Chromium, tmp_path: Path
) -> None:
    base = _start_app(app_process, tmp_path, otlp_receiver.endpoint, otlp_receiver)
    page = chromium.new_page()
    _visit(page, base, otlp_receiver)

    page_load = _one(otlp_receiver.wait_for_spans(1, name="page load", timeout=20), "page load")
    calls = _browser_client_spans(otlp_receiver)
    fetch_span = _one([s for s in calls if "fetch" in s.scope], "fetch CLIENT span")
    xhr_span = _one([s for s in calls if "xml-http-request" in s.scope], "XHR CLIENT span")

    def servers_of_page_and_api() -> list[Span]:
        found = otlp_receiver.spans(kind="SERVER")
        routes = [s.attributes.get("http.route") for s in found]
        return found if "/" in routes and routes.count("/api/items/{item_id}") == 2 else []

    servers = otlp_receiver.wait_for(
        servers_of_page_and_api, what="the server spans of the page and the API call"
    )
    html_server = _one([s for s in servers if s.attributes.get("http.route") == "/"], "SERVER span of /")
    api_servers = [s for s in servers if s.attributes.get("http.route") == "/api/items/{item_id}"]
    api_server = _one(
        [s for s in api_servers if s.trace_id == fetch_span.trace_id], "API SERVER span of fetch"
    )
    xhr_server = _one([s for s in api_servers if s.trace_id == xhr_span.trace_id], "API SERVER span of XHR")

    # The page load is a child of the server span that rendered the page: one trace.
    assert page_load.trace_id == html_server.trace_id
    assert page_load.parent_span_id == html_server.span_id
    assert page_load.resource["service.name"] == "shop-browser"
    assert page_load.resource["deployment.environment.name"] == "test"
    # One resource per service and environment (the collector sums pages per resource); the
    # browser's details go on the span.
    assert "user_agent.original" not in page_load.resource
    assert "Chrome" in page_load.attributes["user_agent.original"]
    attrs = page_load.attributes
    assert attrs["http.route"] == "/"
    for vital in ("perf.browser.lcp_ms", "perf.browser.fcp_ms", "perf.browser.ttfb_ms"):
        assert isinstance(attrs.get(vital), float | int) and attrs[vital] >= 0, (vital, attrs)
    assert attrs["perf.browser.load_ms"] >= attrs["perf.browser.dom_content_loaded_ms"] > 0
    assert page_load.end_ns > page_load.start_ns

    # The fetch call carried traceparent: the API's SERVER span is its child.
    assert fetch_span.trace_id == api_server.trace_id
    assert api_server.parent_span_id == fetch_span.span_id
    assert fetch_span.attributes["url.template"] == "/api/items/{id}"
    assert fetch_span.attributes["http.response.status_code"] == 200
    # So did the XMLHttpRequest.
    assert xhr_server.parent_span_id == xhr_span.span_id
    assert xhr_span.attributes["url.template"] == "/api/items/{id}"
    assert xhr_server.attributes["url.query"] == "via=xhr"
    # ...and the query ran inside that server span.
    queries = [
        s
        for s in otlp_receiver.spans(trace_id=api_server.trace_id)
        if s.kind == "CLIENT" and s.resource.get("service.name") == "shop"
    ]
    assert queries and all(q.parent_span_id == api_server.span_id for q in queries)

    # Web Vitals as histograms keyed by the page's route (exported as OTLP/JSON, delta).
    for name in (
        "perf.browser.lcp",
        "perf.browser.fcp",
        "perf.browser.ttfb",
        "perf.browser.page_load.duration",
    ):
        otlp_receiver.wait_for(lambda n=name: otlp_receiver.metric_points(n), what=f"metric {name}")
        assert otlp_receiver.histogram_count(name, {"http.route": "/"}) == 1, otlp_receiver.dump()
    api_call = {"url.template": "/api/items/{id}", "http.request.method": "GET"}
    otlp_receiver.wait_for(  # the XHR may end after the vitals above were exported
        lambda: otlp_receiver.histogram_count("perf.browser.request.duration", api_call) == 2,
        what="the fetch and XHR durations",
    )
    # The click was an interaction: INP is reported when the page is hidden.
    otlp_receiver.wait_for(lambda: otlp_receiver.metric_points("perf.browser.inp"), what="INP")
    assert otlp_receiver.histogram_count("perf.browser.inp", {"http.route": "/"}) == 1
    assert {p.temporality for p in otlp_receiver.metric_points("perf.browser.lcp")} == {"delta"}
    # A late INP goes on a "web vitals" span, which leaves in a trace export of its own.
    otlp_receiver.wait_for_spans(
        where=lambda s: (
            s.trace_id == page_load.trace_id
            and s.name in ("page load", "web vitals")
            and "perf.browser.inp_ms" in s.attributes
        ),
        what="the INP on the page load or a web vitals span of its trace",
    )

    # The browser asked before posting cross-origin, and nothing went wrong in the page.
    assert otlp_receiver.preflights() and all(p.allowed for p in otlp_receiver.preflights())
    assert otlp_receiver.errors() == []
    assert page.exceptions == []
    assert [m for m in page.console if m.type in ("error", "warning", "browser:error")] == []


@pytest.mark.parametrize("broken", ["refused", "status:500"])
def test_a_broken_collector_leaves_the_page_working_with_one_warning(
    app_process: AppFactory, chromium: Chromium, tmp_path: Path, broken: str
) -> None:
    with OTLPReceiver() as receiver:
        if broken == "refused":
            endpoint = f"http://127.0.0.1:{closed_port()}"
        else:
            receiver.mode = broken
            endpoint = receiver.endpoint
        base = _start_app(app_process, tmp_path, endpoint, None)
        page = chromium.new_page()
        page.navigate(base + "/")
        page.wait_for("document.getElementById('out').textContent === 'seven'", what="the page's fetch")
        # Leaving the page makes the script export at once (pagehide); that export fails.
        page.evaluate("dispatchEvent(new PageTransitionEvent('pagehide')), true")
        page.wait_for_console(lambda m: m.type == "warning", what="the export warning")
        page.click("#go")
        page.wait_for("document.getElementById('title').textContent.includes('refreshed')", what="the click")
        page.wait_for("fetch('/hello').then(r => r.ok)", what="the app still answering")
        sent = receiver.request_count()
        logged = list(page.console)
        page.evaluate("dispatchEvent(new PageTransitionEvent('pagehide')), true")  # sends nothing more
        page.wait_for("fetch('/hello').then(r => r.ok)", what="the app still answering")
        assert page.exceptions == []
        ours = [m for m in page.console if not m.type.startswith("browser:")]
        assert len(ours) == 1, ours
        assert ours[0].type == "warning" and ours[0].text.startswith("otel-perf:"), ours
        # Chromium itself logs each failed request; the script stops after the first failure, so
        # that is at most one line per signal (traces, metrics) and no more after it.
        network = [m for m in page.console if m.type.startswith("browser:")]
        assert len(network) <= 2 and all(m.text.startswith("Failed to load resource") for m in network), (
            network
        )
        assert page.console == logged
        assert receiver.request_count() == sent
        if broken != "refused":
            assert 1 <= sent <= 2  # it did try, and got the 500
