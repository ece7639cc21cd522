"""`otel-perf loadtest`: scenarios, results, gates, regression statistics, run tagging, and end to
end against the real instrumented demo app.

Locust monkey-patches the whole process with gevent when imported, so it never runs in the pytest
process: every load test here is the `otel-perf loadtest` command in a subprocess.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_perf._analysis.budgets import parse_budgets
from otel_perf._analysis.regression import (
    Thresholds,
    cliffs_delta,
    compare_runs,
    hodges_lehmann,
    holm,
    mann_whitney_u,
    run_to_run_limit,
    t_ppf,
)
from otel_perf._loadtest.gates import check_budgets, render_breaches
from otel_perf._loadtest.results import Collector, percentile, summarise
from otel_perf._loadtest.scenario import ScenarioError, load_scenario, parse_scenario
from otel_perf._loadtest.tagging import tag_headers, trace_id_of
from support.procs import AppProcess, clean_environ, free_port, skip_or_fail
from support.prometheus import prometheus_path, start_prometheus

BIN = Path(sys.executable).parent
OTEL_PERF = shutil.which("otel-perf", path=str(BIN)) or str(BIN / "otel-perf")
LAUNCHER = shutil.which("otel-perf-instrument", path=str(BIN)) or str(BIN / "otel-perf-instrument")
TOKEN = "loadtest-secret-token"
DETAIL = "GET /api/v1/appointments/{appointment_id}"

# --------------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------------


def test_bundled_demo_scenario_uses_route_templates() -> None:
    scenario = load_scenario("demo")
    assert scenario.keys() == ["GET /api/v1/appointments", DETAIL, "POST /api/v1/appointments"]
    detail = scenario.requests[1]
    rng = random.Random(1)
    urls = {detail.url(rng) for _ in range(200)}
    assert all(u.startswith("/api/v1/appointments/") for u in urls)
    assert {int(u.rsplit("/", 1)[1]) for u in urls} <= set(range(1, 41))
    assert scenario.requests[0].url(rng) == "/api/v1/appointments?limit=10"
    create = scenario.requests[2]
    assert (create.ok(201), create.ok(200), detail.ok(200), detail.ok(404), detail.ok(0)) == (
        True, False, True, False, False)


def test_scenario_values_are_url_quoted() -> None:
    scenario = parse_scenario("requests:\n  - path: /search/{q}\n    params: {q: ['a b/c']}\n")
    assert scenario.requests[0].url(random.Random()) == "/search/a%20b%2Fc"
    assert scenario.name == "scenario"


BAD_SCENARIOS = [
    ("requests:\n  - path: /a\n    wieght: 2\n", ["s.yaml:3", "unknown key 'wieght'"]),
    ("requests:\n  - path: /a/{id}\n", ["placeholder {id} has no values"]),
    ("requests:\n  - path: /a\n    params: {id: [1]}\n", ["no {id} placeholder"]),
    ("requests:\n  - path: /a?x=1\n", ["under `query:`"]),
    ("requests:\n  - path: a\n", ["starting with '/'"]),
    ("requests:\n  - path: /a\n    weight: 0\n", ["not a weight"]),
    ("requests:\n  - path: /a\n    method: FETCH\n", ["unknown HTTP method 'FETCH'"]),
    ("requests:\n  - path: /a/{id}\n    params: {id: {range: [5, 1]}}\n", ["lo <= hi"]),
    ("requests:\n  - path: /a\n    expect: [2000]\n", ["HTTP status codes"]),
    ("requests:\n  - path: /a\n  - path: /a\n", ["same request as entry 0"]),
    ("requests: []\n", ["non-empty list"]),
    ("wait: {min_ms: 900, max_ms: 100}\nrequests: [/a]\n", ["greater than max_ms"]),
    ("users: 3\nrequests: [/a]\n", ["unknown key 'users'"]),
    ("", ["the file is empty"]),
]


@pytest.mark.parametrize(("text", "fragments"), BAD_SCENARIOS,
                         ids=[f"bad{i}" for i in range(len(BAD_SCENARIOS))])
def test_scenario_errors_say_where_and_what(text: str, fragments: list[str]) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "s.yaml")
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_scenario_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(str(tmp_path / "nope.yaml"))
    with pytest.raises(ScenarioError, match="no such Locust file"):
        load_scenario(str(tmp_path / "nope.py"))
    locustfile = tmp_path / "mine.py"
    locustfile.write_text("# a locust file\n")
    assert load_scenario(str(locustfile)).locustfile == str(locustfile)


# --------------------------------------------------------------------------------------------------
# Results, gates, tagging
# --------------------------------------------------------------------------------------------------


def _collector(latencies: dict[str, list[float]], failures: int = 0, warmup: float = 0.0) -> Collector:
    c = Collector(warmup_s=warmup)
    c.start(1000.0)
    for key, values in latencies.items():
        for i, ms in enumerate(values):
            c.record(key, ms, ok=i >= failures, status=200 if i >= failures else 500,
                     end_time=1000.0 + i * 10.0 / len(values), trace_id=f"{i:032x}")
    return c


def test_summary_per_endpoint_and_second() -> None:
    values = [float(v) for v in range(1, 101)]
    c = _collector({DETAIL: values, "GET /hello": [5.0] * 10}, failures=2)
    report = summarise(c, {"duration_s": 10.0})
    detail = next(e for e in report["endpoints"] if e["key"] == DETAIL)
    assert (detail["method"], detail["route"], detail["requests"], detail["failures"]) == (
        "GET", "/api/v1/appointments/{appointment_id}", 100, 2)
    assert detail["client"]["p50_ms"] == pytest.approx(50.5)
    assert detail["client"]["p99_ms"] == pytest.approx(99.01)
    assert detail["rps"] == 10.0
    assert detail["statuses"] == {"200": 98, "500": 2}
    assert [s["ms"] for s in detail["slowest"]] == [100.0, 99.0, 98.0, 97.0, 96.0]
    assert detail["slowest"][0]["trace_id"] == f"{99:032x}"
    assert report["totals"]["requests"] == 110
    assert len(report["timeline"]["seconds"]) == 10
    assert sum(report["timeline"]["series"][DETAIL]["rps"]) == 100
    assert report["percentiles"][DETAIL][0] == [0.0, 1.0]


def test_warmup_requests_only_show_in_the_timeline() -> None:
    c = _collector({"GET /hello": [1.0] * 100}, warmup=2.0)
    report = summarise(c, {"duration_s": 10.0})
    assert report["totals"]["requests"] == 80
    assert report["totals"]["warmup_requests"] == 20
    assert report["endpoints"][0]["rps"] == 10.0  # 80 requests over the 8 measured seconds
    assert sum(report["timeline"]["series"]["GET /hello"]["rps"]) == 100


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([1.0], 0.99) == 1.0
    assert percentile([], 0.5) != percentile([], 0.5)  # NaN


def test_budget_gate_names_the_route_and_the_objective() -> None:
    budgets = parse_budgets(f'version: 1\ndefaults: {{p95_ms: 1000}}\nroutes:\n  "{DETAIL}": '
                            '{tier: critical, p95_ms: 50, error_rate: 0.01, min_rps: 20}\n'
                            '  "GET /api/v1/apointments": {p95_ms: 10}\n', "b.yaml")
    c = _collector({DETAIL: [float(v) for v in range(1, 101)], "GET /hello": [5.0] * 10}, failures=2)
    report = summarise(c, {"duration_s": 10.0}, server={
        ("GET", "/api/v1/appointments/{appointment_id}"): {"p50_ms": 3.0, "p95_ms": 40.0, "p99_ms": 60.0}})
    gate = check_budgets(report, budgets)
    breached = {(b["key"], b["objective"]) for b in gate["breaches"]}
    assert breached == {(DETAIL, "p95_ms"), (DETAIL, "error_rate"), (DETAIL, "min_rps")}
    hello = [c for c in gate["checks"] if c["key"] == "GET /hello"]
    assert hello and not hello[0]["listed"] and hello[0]["ok"]  # defaults cover unlisted routes
    table = "\n".join(render_breaches(gate))
    assert DETAIL in table and "critical" in table and "+90%" in table
    assert gate["unexercised"] == [{"key": "GET /api/v1/apointments", "did_you_mean": None}]
    server_gate = check_budgets(report, budgets, "server")
    assert (DETAIL, "p95_ms") not in {(b["key"], b["objective"]) for b in server_gate["breaches"]}


def test_budget_gate_checks_4xx_queries_db_and_critical_levels() -> None:
    """Issue 21: client errors, queries per request (server side), DB budgets, target and critical."""
    budgets = parse_budgets(f"""version: 1
defaults: {{p95_ms: 1000, client_error_rate: 0.1, critical: {{client_error_rate: 0.5}}}}
routes:
  "GET /api/v1/appointments": {{queries_per_request: 5, critical: {{queries_per_request: 30}}}}
  "{DETAIL}": {{p95_ms: 50, critical: {{p95_ms: 500}}}}
db:
  "SELECT appointments": {{p95_ms: 10}}
""", "b.yaml")
    c = _collector({DETAIL: [60.0] * 10, "GET /api/v1/appointments": [5.0] * 10, "GET /login": [5.0] * 10})
    for _ in range(30):  # what users saw: 30 of 40 answered 401
        c.record("GET /login", 5.0, ok=True, status=401, end_time=1005.0, trace_id="")
    report = summarise(c, {"duration_s": 10.0}, server={
        ("GET", "/api/v1/appointments"): {"p95_ms": 4.0, "p95_queries": 11.0}})
    report["server_database"] = [{"operation": "SELECT", "collection": "appointments", "count": 100,
                                  "p50_ms": 3.0, "p95_ms": 12.5, "p99_ms": 20.0}]  # fmt: skip
    gate = check_budgets(report, budgets)
    levels = {(b["key"], b["objective"]): b["level"] for b in gate["breaches"]}
    assert levels == {
        ("GET /api/v1/appointments", "queries_per_request"): "over",
        (DETAIL, "p95_ms"): "over",
        ("GET /login", "client_error_rate"): "critical",
        ("SELECT appointments", "p95_ms"): "over",
    }
    table = "\n".join(render_breaches(gate))
    assert "5 queries (critical 30 queries)" in table and "CRITICAL" in table and "75.00%" in table
    critical_only = check_budgets(report, budgets, fail_on="critical")
    only = [(b["key"], b["objective"]) for b in critical_only["breaches"]]
    assert only == [("GET /login", "client_error_rate")]
    # Without the stats endpoint the queries cannot be judged, and the gate says so.
    report["endpoints"] = [dict(e, server=None) for e in report["endpoints"]]
    blind = check_budgets(report, budgets)
    assert ("GET /api/v1/appointments", "queries_per_request") not in {(b["key"], b["objective"]) for b in
                                                                         blind["breaches"]}  # fmt: skip
    assert any("queries_per_request not checked" in note for note in blind["notes"])


def test_tag_headers_and_traceresponse() -> None:
    headers = tag_headers("20260101T000000Z-abc123", "demo x")
    assert headers["baggage"] == ("perf.loadtest.run_id=20260101T000000Z-abc123,"
                                  "perf.loadtest.scenario=demo%20x")
    assert "run 20260101T000000Z-abc123" in headers["User-Agent"]
    trace = "0af7651916cd43dd8448eb211c80319c"
    assert trace_id_of(f"00-{trace}-b7ad6b7169203331-01") == trace
    assert trace_id_of("garbage") == ""
    assert trace_id_of(None) == ""


def test_loadtest_modules_do_not_import_locust() -> None:
    """The core and the CLI must never monkey-patch a process just by being imported."""
    code = ("import sys, otel_perf._cli.tools, otel_perf._cli.cmd_loadtest, otel_perf._loadtest.results, "
            "otel_perf._loadtest.server, otel_perf._export.html_report, otel_perf._setup.install; "
            "sys.exit(int('locust' in sys.modules or 'gevent' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False, env=clean_environ()).returncode == 0


# --------------------------------------------------------------------------------------------------
# Regression statistics
# --------------------------------------------------------------------------------------------------


def _brute_u(x: list[float], y: list[float]) -> float:
    return sum(1.0 if b > a else 0.5 if b == a else 0.0 for a in x for b in y)


def _brute_median_diff(x: list[float], y: list[float]) -> float:
    diffs = sorted(b - a for a in x for b in y)
    n = len(diffs)
    return diffs[n // 2] if n % 2 else (diffs[n // 2 - 1] + diffs[n // 2]) / 2


_samples = st.lists(st.integers(0, 30).map(float), min_size=1, max_size=25)


@settings(max_examples=200, deadline=None)
@given(x=_samples, y=_samples)
def test_u_delta_and_shift_match_brute_force(x: list[float], y: list[float]) -> None:
    mw = mann_whitney_u(x, y)
    assert mw.u == pytest.approx(_brute_u(x, y))
    delta = cliffs_delta(mw.u, len(x), len(y))
    gt = sum(b > a for a in x for b in y)
    lt = sum(b < a for a in x for b in y)
    assert delta == pytest.approx((gt - lt) / (len(x) * len(y)))
    assert 0.0 <= mw.p_greater <= 1.0
    shift, low, high = hodges_lehmann(x, y)
    assert shift == pytest.approx(_brute_median_diff(x, y), abs=1e-6)
    assert low <= shift + 1e-6
    assert high >= shift - 1e-6


def test_mann_whitney_matches_a_textbook_value() -> None:
    # No ties: y beats x in 23 of 30 pairs; mean 15, variance n1*n2*(n1+n2+1)/12 = 30.
    x = [1.1, 2.2, 3.3, 4.4, 5.5, 6.6]
    y = [2.5, 4.5, 6.5, 7.5, 8.5]
    mw = mann_whitney_u(x, y)
    assert mw.u == 23
    sd = math.sqrt(30)
    assert mw.z == pytest.approx((23 - 15) / sd)
    assert mw.p_greater == pytest.approx(0.5 * math.erfc((23 - 15 - 0.5) / sd / math.sqrt(2)))
    assert mw.p_greater == pytest.approx(0.0855, abs=5e-4)


def test_hodges_lehmann_interval_covers_a_known_shift() -> None:
    rng = random.Random(7)
    x = [rng.lognormvariate(1.5, 0.5) for _ in range(800)]
    y = [rng.lognormvariate(1.5, 0.5) + 10.0 for _ in range(800)]
    shift, low, high = hodges_lehmann(x, y)
    assert low < 10.0 < high
    assert shift == pytest.approx(10.0, abs=0.6)


def test_t_quantiles_match_tables() -> None:
    for df, p95, p99 in ((1, 6.3138, 31.8205), (2, 2.9200, 6.9646), (3, 2.3534, 4.5407), (5, 2.0150, 3.3649),
                         (9, 1.8331, 2.8214), (30, 1.6973, 2.4573)):
        assert t_ppf(0.95, df) == pytest.approx(p95, rel=5e-3)
        assert t_ppf(0.99, df) == pytest.approx(p99, rel=5e-3)


def test_run_to_run_noise_keeps_a_drifting_rerun_from_failing() -> None:
    """Three baseline runs whose medians differ by up to 25% (a busy machine): a rerun 20% slower
    than their pooled median is significant per request, but within what same-build runs do."""
    rng = random.Random(11)

    def run(median: float, n: int = 800) -> list[float]:
        return [median * rng.lognormvariate(0, 0.35) for _ in range(n)]

    runs = [{"GET /a": run(10.0)}, {"GET /a": run(12.5)}, {"GET /a": run(9.5)}]
    limit = run_to_run_limit([10.0, 12.5, 9.5], 0.95)
    assert limit is not None and 14 < limit[0] < 20
    drift = compare_runs(runs, {"GET /a": run(12.9)}).latency[0]
    # The per-request test alone would call it a regression:
    assert drift.p_adjusted is not None and drift.p_adjusted < 0.01
    assert drift.verdict == "no change"
    assert "run-to-run range of 3 baseline runs" in drift.reason
    slow = compare_runs(runs, {"GET /a": run(35.0)}).latency[0]
    assert slow.verdict == "regression"
    assert slow.run_limit_ms is not None and slow.current_p50_ms is not None
    assert slow.current_p50_ms > slow.run_limit_ms
    one = compare_runs(runs[:1], {"GET /a": run(12.9)}).latency[0]
    assert one.run_limit_ms is None and one.verdict == "regression"  # one run: thresholds only


def test_holm() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []


def test_compare_runs_verdicts() -> None:
    rng = random.Random(3)

    def latencies(shift: float, n: int = 600) -> list[float]:
        return [rng.lognormvariate(1.6, 0.4) + shift for _ in range(n)]

    result = compare_runs(
        [{"same": latencies(0), "slower": latencies(0), "tiny": latencies(0), "faster": latencies(20),
          "few": latencies(0, 5)}],
        {"same": latencies(0), "slower": latencies(25), "tiny": latencies(0.3), "faster": latencies(0),
         "few": latencies(50, 5)},
        Thresholds(),
        {"slower": (0, 600), "errors": (1, 500)},
        {"slower": (0, 600), "errors": (60, 500)},
    )
    verdicts = {c.key: c.verdict for c in result.latency}
    assert verdicts == {"same": "no change", "slower": "regression", "tiny": "no change",
                        "faster": "improvement", "few": "insufficient data"}
    slower = next(c for c in result.latency if c.key == "slower")
    assert slower.shift_low_ms is not None and slower.shift_low_ms < 25 < (slower.shift_high_ms or 0)
    assert slower.cliffs_delta is not None and slower.cliffs_delta > 0.9
    assert slower.confidence is not None and slower.confidence > 0.999
    assert result.regressions == ["slower", "errors"]
    assert json.dumps(result.as_dict())  # JSON-ready


# --------------------------------------------------------------------------------------------------
# The command, end to end
# --------------------------------------------------------------------------------------------------


def _loadtest(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OTEL_PERF, "loadtest", "-q", *args], capture_output=True, text=True, check=False,
                          timeout=timeout, env=clean_environ({"PYTHONUNBUFFERED": "1"}))


def test_cli_input_errors_exit_2_and_say_why(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("requests:\n  - path: /a\n    wieght: 2\n")
    port = free_port()
    host = f"http://127.0.0.1:{port}"
    cases = [
        (["--host", host, "-f", str(bad)], f"{bad}:3"),
        (["--host", "localhost:80", "-f", "demo"], "is not a URL"),
        (["--host", host, "-f", "demo", "--baseline", str(tmp_path / "none.json")], "--save-baseline"),
        (["--host", host, "-f", "demo", "--budgets", str(tmp_path / "none.yaml")], "no such budgets file"),
        (["--host", host, "-f", "demo", "-t", "2s", "--warmup", "3s"], "leaves nothing"),
    ]
    for args, message in cases:
        result = _loadtest(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    result = _loadtest("--host", host, "-f", "demo")
    assert result.returncode == 3
    assert "is the service running?" in result.stderr


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []  # noqa: RUF012

    def do_GET(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()} | {"path": self.path})
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("traceresponse", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.slow
@pytest.mark.matrix  # Locust (the loadtest extra)
def test_locustfile_requests_carry_the_run_tags_and_the_request_limit_holds(tmp_path: Path) -> None:
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    locustfile = tmp_path / "api_locustfile.py"
    locustfile.write_text(
        "from locust import HttpUser, constant, task\n\n"
        "class Api(HttpUser):\n"
        "    wait_time = constant(0.01)\n\n"
        "    @task\n"
        "    def item(self):\n"
        "        self.client.get('/items/7', name='/items/{item_id}')\n"
    )
    out = tmp_path / "run.json"
    try:
        result = _loadtest("--host", f"http://127.0.0.1:{server.server_port}", "-f", str(locustfile),
                           "-u", "3", "-r", "3", "-t", "20s", "--max-requests", "40",
                           "--run-id", "test-run-1", "--json", str(out))
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["run"]["stop_reason"] == "request limit"
    # Locust stops its users asynchronously: the requests in flight when the limit is hit
    # finish, and a user whose think time (10 ms here) ends while the stop is under way may
    # send one more; so at most two per user (3) past the limit (one CI run counted 44).
    assert 40 <= report["totals"]["requests"] <= 40 + 2 * 3
    assert report["run"]["duration_s"] < 15
    (endpoint,) = report["endpoints"]
    assert endpoint["key"] == "GET /items/{item_id}"
    assert endpoint["slowest"][0]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert len(_Recorder.seen) >= 40
    for headers in _Recorder.seen:
        assert headers["baggage"] == "perf.loadtest.run_id=test-run-1,perf.loadtest.scenario=api_locustfile"
        assert "run test-run-1" in headers["user-agent"]
        assert headers["path"] == "/items/7"


# --- against the demo app ---------------------------------------------------------------------------

BUDGETS = f"""\
version: 1
defaults:
  p95_ms: 2000
  error_rate: 0.05
routes:
  "{DETAIL}":
    tier: critical
    p50_ms: 0.2
    p95_ms: 0.5
    error_rate: 0.001
  "GET /hello":
    p95_ms: 1500
"""

SCENARIO = """\
name: e2e
wait: {min_ms: 100, max_ms: 200}
requests:
  - path: /api/v1/appointments/{appointment_id}
    params: {appointment_id: {range: [1, 40]}}
    weight: 6
  - path: /api/v1/appointments
    query: {limit: 5}
    weight: 2
  - path: /hello
    weight: 2
"""


@dataclass
class Demo:
    url: str
    proc: AppProcess


def _start_demo(tmp: Path, **env: str) -> Demo:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    budgets = tmp / "app-budgets.yaml"
    budgets.write_text(BUDGETS)
    proc = AppProcess(
        [LAUNCHER, "uvicorn", "otel_perf._demo.app:app", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log"],
        env={"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
             "OTEL_PERF_STATS_PATH": "/_perf", "OTEL_PERF_STATS_TOKEN": TOKEN, "OTEL_PERF__RAISE_ERRORS": "1",
             "OTEL_PERF_BUDGETS": str(budgets), "DEMO_DATABASE_URL": f"sqlite:///{tmp / 'demo.db'}", **env},
        name="demo",
    ).start()
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/hello", timeout=60)
    for i in itertools.islice(itertools.cycle(range(1, 41)), 60):  # warm the code paths and the pool
        proc.wait_http(f"{url}/api/v1/appointments/{i}")
    return Demo(url, proc)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    app = _start_demo(tmp_path_factory.mktemp("demo"))
    yield app
    app.proc.stop()


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / "e2e.yaml"
    path.write_text(SCENARIO)
    return path


@pytest.mark.slow
def test_budget_breach_fails_and_names_the_route(demo: Demo, tmp_path: Path) -> None:
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(BUDGETS)
    out, page = tmp_path / "result.json", tmp_path / "report.html"
    result = _loadtest("--host", demo.url, "-f", "demo", "-u", "10", "-r", "10", "-t", "4s",
                       "--budgets", str(budgets), "--stats-token", TOKEN, "--json", str(out),
                       "--html", str(page))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"breach(es) on {DETAIL}" in result.stdout
    breach_lines = [line for line in result.stdout.splitlines()
                    if line.startswith(DETAIL) and "critical" in line]
    assert any("p50_ms" in line for line in breach_lines), result.stdout
    report = json.loads(out.read_text())
    assert {b["key"] for b in report["budgets"]["breaches"]} == {DETAIL}
    endpoints = {e["key"]: e for e in report["endpoints"]}
    assert set(endpoints) == {DETAIL, "GET /api/v1/appointments", "POST /api/v1/appointments"}
    assert endpoints["POST /api/v1/appointments"]["failures"] == 0  # expect: [201] held
    detail = endpoints[DETAIL]
    # Server side from the stats endpoint, with the app's own budget check (core + budgets file).
    assert detail["server"]["source"] == "stats"
    assert detail["server"]["count"] == detail["requests"]
    assert detail["server"]["p50_ms"] <= detail["client"]["p50_ms"] * 1.5 + 1
    assert detail["server"]["budget"]["tier"] == "critical"
    assert detail["server"]["budget"]["ok"] is False
    # The slowest requests link to their traces (traceresponse header of the instrumented app).
    assert len(detail["slowest"][0]["trace_id"]) == 32
    assert report["run"]["baggage"].startswith("perf.loadtest.run_id=")
    assert 'id="report-data"' in page.read_text()  # charts are drawn from it (see test_html_report)


@pytest.mark.slow
def test_queries_per_request_budget_breached_fails_the_load_test(demo: Demo, tmp_path: Path) -> None:
    """The demo's list endpoint runs 11 statements a request (N+1); a budget of 5 fails the run."""
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text('version: 1\ndefaults: {p95_ms: 5000}\n'
                       'routes:\n  "GET /api/v1/appointments": {queries_per_request: 5}\n')
    out = tmp_path / "result.json"
    result = _loadtest("--host", demo.url, "-f", "demo", "-u", "10", "-r", "10", "-t", "4s",
                       "--budgets", str(budgets), "--stats-token", TOKEN, "--json", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "breach(es) on GET /api/v1/appointments" in result.stdout
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("GET /api/v1/appointments ")
               and "queries_per_request" in line]  # fmt: skip
    assert "5 queries" in line and "server" in line, result.stdout
    report = json.loads(out.read_text())
    (breach,) = report["budgets"]["breaches"]
    assert breach["objective"] == "queries_per_request" and breach["measured"] > 5
    listed = next(e for e in report["endpoints"] if e["key"] == "GET /api/v1/appointments")
    assert listed["server"]["mean_queries"] >= 6  # one for the list, one per appointment


@pytest.mark.slow
def test_injected_slowdown_is_a_regression_and_a_rerun_is_not(demo: Demo, scenario_file: Path,
                                                               tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    common = ["-f", str(scenario_file), "-u", "10", "-r", "10", "-t", "5s", "--warmup", "1s"]
    first = _loadtest("--host", demo.url, *common, "--save-baseline", str(baseline))
    assert first.returncode == 0, first.stdout + first.stderr
    for _ in range(2):  # a baseline of three runs knows how much runs of the same build vary
        more = _loadtest("--host", demo.url, *common, "--append-baseline", str(baseline))
        assert more.returncode == 0, more.stdout + more.stderr
    saved = json.loads(baseline.read_text())
    assert saved["schema"] == "otel-perf-baseline/1"
    assert len(saved["runs"]) == 3
    assert all(len(r["endpoints"][DETAIL]["samples_ms"]) > 80 for r in saved["runs"])

    rerun_json = tmp_path / "rerun.json"
    rerun = _loadtest("--host", demo.url, *common, "--baseline", str(baseline), "--json", str(rerun_json))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "PASS: no regression" in rerun.stdout
    assert json.loads(rerun_json.read_text())["regression"]["regressions"] == []

    slow = _start_demo(tmp_path / "slow", DEMO_SLOWDOWN="/api/v1/appointments/{appointment_id}:40")
    try:
        slowed_json = tmp_path / "slowed.json"
        slowed = _loadtest("--host", slow.url, *common, "--baseline", str(baseline),
                           "--json", str(slowed_json))
    finally:
        slow.proc.stop()
    assert slowed.returncode == 1, slowed.stdout + slowed.stderr
    assert f"FAIL: regression on {DETAIL}" in slowed.stdout or f"REGRESSION {DETAIL}" in slowed.stdout
    regression = json.loads(slowed_json.read_text())["regression"]
    assert DETAIL in regression["regressions"]
    verdict = next(c for c in regression["latency"] if c["key"] == DETAIL)
    assert verdict["verdict"] == "regression"
    # The injected 40 ms (asyncio.sleep takes at least that, plus scheduling), with its 95% interval.
    assert 35 < verdict["shift_low_ms"] <= verdict["shift_ms"] <= verdict["shift_high_ms"] < 60
    assert verdict["cliffs_delta"] > 0.8
    assert verdict["p_adjusted"] < 1e-6
    assert "GET /hello" not in regression["regressions"]


@pytest.mark.slow
@pytest.mark.prometheus
def test_server_side_numbers_from_prometheus(scenario_file: Path, tmp_path: Path) -> None:
    if prometheus_path() is None:
        skip_or_fail("prometheus binary not installed (Debian package prometheus)")
    port, metrics_port = free_port(), free_port()
    app = AppProcess(
        [LAUNCHER, "uvicorn", "otel_perf._demo.app:app", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log"],
        env={"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "prometheus",
             "OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
             "OTEL_PERF__RAISE_ERRORS": "1",
             "DEMO_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"},
        name="demo-prom",
    ).start()
    prom = None
    try:
        app.wait_http(f"http://127.0.0.1:{port}/hello", timeout=60)
        prom = start_prometheus([f"127.0.0.1:{metrics_port}"], job="demo")
        prom.wait_for_target_up()
        time.sleep(1.5)  # one scrape before the run, so increase() has a starting point
        out = tmp_path / "prom.json"
        result = _loadtest("--host", f"http://127.0.0.1:{port}", "-f", str(scenario_file), "-u", "5",
                           "-r", "5", "-t", "4s", "--prometheus", prom.url, "--job", "demo",
                           "--json", str(out))
    finally:
        if prom is not None:
            prom.stop()
        app.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    detail = next(e for e in json.loads(out.read_text())["endpoints"] if e["key"] == DETAIL)
    assert detail["server"]["source"] == "prometheus"
    assert detail["server"]["count"] >= detail["requests"] * 0.5
    assert detail["server"]["p95_ms"] > 0

