"""The load-test HTML report: self-contained, safe with hostile route names, and its charts render in
headless Chromium (the DOM after the scripts ran holds SVG charts with data points)."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from otel_perf._analysis.budgets import parse_budgets
from otel_perf._analysis.regression import compare_runs
from otel_perf._export.html_report import render_html
from otel_perf._loadtest.gates import check_budgets
from otel_perf._loadtest.results import PERCENTILE_POINTS, Collector, percentile, summarise
from support.procs import skip_or_fail

DETAIL = "GET /api/v1/appointments/{appointment_id}"
HOSTILE = "GET /</script><script>window.pwned=1</script><b>x"


def _report(seed: int = 5) -> dict[str, Any]:
    rng = random.Random(seed)
    collector = Collector()
    collector.start(1000.0)
    baseline: dict[str, list[float]] = {}
    for key, base_ms, n in ((DETAIL, 4.0, 600), ("GET /api/v1/appointments", 9.0, 200), (HOSTILE, 2.0, 50)):
        baseline[key] = [rng.lognormvariate(math.log(base_ms), 0.3) for _ in range(n)]
        for i in range(n):
            ms = rng.lognormvariate(math.log(base_ms + (40 if key == DETAIL else 0)), 0.3)
            ok = rng.random() > 0.01
            collector.record(key, ms, ok, 200 if ok else 500, 1000.0 + 10.0 * i / n, f"{i:032x}")
    for s in range(10):
        collector.note_users(1000.0 + s, min(10, 2 * (s + 1)))
    report = summarise(collector, {"id": "r1", "scenario": "test", "host": "http://127.0.0.1:1", "users": 10,
                                   "spawn_rate": 2.0, "duration_s": 10.0, "stop_reason": "duration",
                                   "baggage": "perf.loadtest.run_id=r1"},
                       server={("GET", "/api/v1/appointments/{appointment_id}"): {
                           "source": "stats", "count": 600, "p50_ms": 43.0, "p95_ms": 60.0, "p99_ms": 80.0}})
    budgets = parse_budgets(f'version: 1\ndefaults: {{p95_ms: 500}}\nroutes:\n  "{DETAIL}": {{p95_ms: 20}}\n',
                            "budgets.yaml")
    report["budgets"] = check_budgets(report, budgets)
    comparison = compare_runs([baseline], {k: ep.samples for k, ep in collector.endpoints.items()})
    report["regression"] = comparison.as_dict() | {"baseline": {"path": "baseline.json"}}
    report["baseline_percentiles"] = {
        k: [[q, percentile(sorted(v), q)] for q in PERCENTILE_POINTS] for k, v in baseline.items()}
    report["notes"] = ["a note with <angle> brackets"]
    return report


class _Scan(HTMLParser):
    """Collects the elements a test asserts on."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.data_json = ""
        self._in_data = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        self._in_data = tag == "script" and a.get("id") == "report-data"

    def handle_endtag(self, tag: str) -> None:
        self._in_data = False

    def handle_data(self, data: str) -> None:
        if self._in_data:
            self.data_json += data

    def all(self, tag: str, **match: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in match.items())]


def _scan(text: str) -> _Scan:
    scan = _Scan()
    scan.feed(text)
    return scan


def test_report_is_self_contained_and_embeds_the_data(tmp_path: Path) -> None:
    report = _report()
    page = render_html(report)
    scan = _scan(page)
    assert json.loads(scan.data_json) == json.loads(json.dumps(report))
    assert len(scan.all("script")) == 2  # the data block and the drawing script, nothing injected
    csp = scan.all("meta", **{"http-equiv": "Content-Security-Policy"})
    assert csp and "default-src 'none'" in csp[0]["content"]
    assert not [a for _, a in scan.tags if any(v.startswith(("http:", "https:", "//")) for k, v in a.items()
                                                if k in ("src", "href"))]
    assert "</script><script>window.pwned" not in page
    assert "&lt;/script&gt;&lt;script&gt;window.pwned=1&lt;/script&gt;" in page  # in the tables, as text
    assert "regression" in page and "budgets: 1 breach(es)" in page


def test_nan_and_missing_numbers_do_not_break_the_page() -> None:
    report = _report()
    report["totals"]["p99_ms"] = math.nan
    report["endpoints"][0]["client"]["p95_ms"] = None
    data = json.loads(_scan(render_html(report)).data_json)
    assert data["totals"]["p99_ms"] is None


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        skip_or_fail("chromium not installed (Debian package chromium)")
    return path


@pytest.mark.slow
@pytest.mark.chromium
def test_charts_render_in_headless_chromium(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(_report()))
    result = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = _scan(result.stdout)
    assert dom.all("body", **{"data-rendered": "true"}), "the drawing script did not finish"
    assert "Uncaught" not in result.stderr, result.stderr[-2000:]
    charts = {a["data-chart"]: a for a in dom.all("svg") if "data-chart" in a}
    assert set(charts) == {"chart-latency", "chart-throughput", "chart-percentiles", "chart-sides"}
    for name, attrs in charts.items():
        assert int(attrs["data-points"]) > 0, name
    series = {a["data-series"] for a in dom.all("path") if "data-series" in a}
    assert {f"{DETAIL} p95", f"{DETAIL} p50", "requests/s", "users", DETAIL, f"{DETAIL} (baseline)"} <= series
    assert len(dom.all("circle")) > 100  # data points with tooltips
    assert len(dom.all("rect")) == 4  # client and server p95 bars (the hostile route has no server data)
    assert len([a for a in dom.all("line") if a.get("class") == "budget-line"]) >= 2  # budgets as thresholds
    # The hostile route name is drawn as text; it created no element (two scripts, no <b>).
    assert len(dom.all("script")) == 2
    assert not dom.all("b")
    assert "&lt;/script&gt;&lt;script&gt;window.pwned=1&lt;/script&gt;&lt;b&gt;x" in result.stdout
