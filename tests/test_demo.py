"""`otel-perf demo`, the README's first command: the demo runs and shows what it captured."""

from __future__ import annotations

import subprocess

import pytest

from support.chromium import chromium_path
from support.launch import BIN
from support.procs import skip_or_fail

pytestmark = pytest.mark.slow


def test_demo_shows_report_findings_and_captured_telemetry() -> None:
    result = subprocess.run([str(BIN / "otel-perf"), "demo", "--rounds", "1"], capture_output=True, text=True,
                            timeout=120, check=False)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "otel-perf report: service 'otel-perf-demo'" in out
    assert "GET /api/v1/appointments/{appointment_id}" in out  # route templates, not raw paths
    assert "N+1 findings:" in out and "selectinload" in out
    assert "Slow queries" in out and "WITH RECURSIVE" in out
    assert "Event loop blocked:" in out and "GET /api/v1/blocking" in out
    assert "Outgoing APIs:" in out
    assert "SELECT patients (CLIENT)" in out
    for metric in ("http.server.request.duration", "db.client.operation.duration", "perf.n_plus_one"):
        assert f"    {metric}\n" in out
    assert " with a trace id" in out and "traceresponse: 00-" in out


@pytest.mark.chromium
def test_demo_opens_its_page_in_chromium_and_shows_one_trace_from_page_to_query() -> None:
    if chromium_path() is None:
        skip_or_fail("chromium not installed (Debian package chromium)")
    result = subprocess.run([str(BIN / "otel-perf"), "demo", "--rounds", "1"], capture_output=True, text=True,
                            timeout=180, check=False)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    browser = out[out.index("\nBrowser: headless Chromium opened http://127.0.0.1:"):]
    assert "page load /: TTFB " in browser and " LCP " in browser, browser
    assert "child of the server span 'GET /' in trace " in browser and ": one trace" in browser, browser
    assert "fetch GET /api/v1/appointments (200) trace " in browser, browser
    assert "-> server span 'GET /api/v1/appointments' in the same trace" in browser, browser
    assert "perf.browser.lcp" in browser and "perf.browser.request.duration" in browser
