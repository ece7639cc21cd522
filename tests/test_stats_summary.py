"""Issue 21 in process: client errors, merged snapshots, windows, budgets, health rules and score.

The runtime is real (registry, instruments, summary); requests are recorded into the same
request-duration histogram the server middleware records into, with the key it uses
(route, method, status, error type).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_perf._analysis.budgets import parse_budgets
from otel_perf._analysis.snapshot import Snapshot
from otel_perf._analysis.stats import percentile, summary
from otel_perf._config import load
from otel_perf._core.runtime import Runtime, build_instruments
from otel_perf._export.report import render
from otel_perf._export.stats_share import History
from otel_perf._metrics.instruments import Gauge, Registry


def _runtime(budgets_yaml: str = "", **env: str) -> Runtime:
    budgets = parse_budgets(budgets_yaml, "b.yaml") if budgets_yaml else None
    registry = Registry()
    bounds = budgets.bounds_seconds() if budgets is not None else ()
    queries = budgets.query_bounds() if budgets is not None else ()
    db = budgets.db_bounds_seconds() if budgets is not None else ()
    inst = build_instruments(registry, bounds, query_bounds=queries, db_bounds=db)
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("t")
    resource = Resource.create({"service.name": "svc"})
    return Runtime(load(env), tracer, registry, inst, resource, budgets=budgets)


def _request(rt: Runtime, route: str, status: int, seconds: float = 0.01, queries: int = 0,
             method: str = "GET") -> None:
    error = str(status) if status >= 500 else ""
    rt.inst.server_duration.record(seconds, (route, method, status, error))
    rt.inst.queries_per_request.record(queries, (route, method))


def _endpoint(stats: dict[str, Any], route: str) -> dict[str, Any]:
    return next(e for e in stats["endpoints"] if e["route"] == route)


def test_4xx_are_client_errors_beside_server_errors() -> None:
    """10 x 404 and 10 x 401 were 'errors: 0' everywhere; they are client errors now."""
    rt = _runtime()
    for _ in range(10):
        _request(rt, "", 404)
        _request(rt, "/private", 401)
    for _ in range(10):
        _request(rt, "/private", 200)
    _request(rt, "/private", 500)
    stats = summary(rt)
    unmatched, private = _endpoint(stats, "(unmatched)"), _endpoint(stats, "/private")
    assert (unmatched["client_errors"], unmatched["client_error_rate"], unmatched["errors"]) == (10, 1.0, 0)
    assert (private["client_errors"], private["errors"], private["count"]) == (10, 1, 21)
    assert private["client_error_rate"] == round(10 / 21, 4)
    assert stats["totals"]["client_errors"] == 20 and stats["totals"]["errors"] == 1
    # Health: 4xx on a matched route with enough requests is a warning; scanners' 404s are not.
    alerts = [a for a in stats["alerts"] if a["kind"] == "client_error_rate"]
    assert [a["subject"] for a in alerts] == ["GET /private"], alerts
    assert stats["status"] == "degraded"
    text = render(stats)
    header = next(line for line in text.splitlines() if line.startswith("endpoint"))
    assert header.split()[:6] == ["endpoint", "count", "rpm", "5xx", "4xx", "p50"]
    assert "client error rate (4xx) 47.6%" in text


def test_client_error_rate_budget_with_a_critical_level() -> None:
    rt = _runtime("""
version: 1
routes:
  "GET /login": {client_error_rate: 0.1, critical: {client_error_rate: 0.3}}
""")
    for status in [401] * 8 + [200] * 17:  # 32%
        _request(rt, "/login", status)
    stats = summary(rt)
    entry = _endpoint(stats, "/login")
    check = next(c for c in entry["budget"]["checks"] if c["objective"] == "client_error_rate")
    assert check == {"objective": "client_error_rate", "limit": 0.1, "critical": 0.3, "measured": 0.32,
                     "level": "critical"}
    assert entry["budget"]["level"] == "critical" and not entry["budget"]["client_error_rate_ok"]
    assert stats["status"] == "unhealthy"
    assert "CRITICAL" in render(stats)


def test_queries_per_request_budget_is_exact_at_the_bound() -> None:
    """The budget is a bucket bound of perf.db.queries_per_request: p95 over it is exactly >5% over it."""
    rt = _runtime('version: 1\ndefaults: {queries_per_request: 4, critical: {queries_per_request: 30}}\n')
    assert 4 in rt.inst.queries_per_request.bounds and 30 in rt.inst.queries_per_request.bounds
    for i in range(100):
        _request(rt, "/ok", 200, queries=4 if i < 96 else 40)  # 4% over: holds
        _request(rt, "/n1", 200, queries=4 if i < 94 else 11)  # 6% over: breached
    stats = summary(rt)
    ok, n1 = _endpoint(stats, "/ok"), _endpoint(stats, "/n1")
    assert ok["p95_queries"] <= 4 and ok["budget"]["queries_ok"]
    assert n1["p95_queries"] > 4 and not n1["budget"]["queries_ok"] and n1["budget"]["level"] == "over"
    assert [a["subject"] for a in stats["alerts"] if a["kind"] == "queries_per_request"] == ["GET /n1"]


def test_db_budgets_by_operation_and_table() -> None:
    rt = _runtime("""
version: 1
db_defaults: {p95_ms: 50}
db:
  "SELECT appointments": {p95_ms: 10, critical: {p95_ms: 40}}
""")
    assert {0.01, 0.04, 0.05} <= set(rt.inst.db_duration.bounds)
    for _ in range(30):
        rt.inst.db_duration.record(0.02, ("sqlite", "SELECT", "appointments", ""))
        rt.inst.db_duration.record(0.02, ("sqlite", "SELECT", "patients", ""))
    _request(rt, "/a", 200)
    stats = summary(rt)
    by_table = {d["collection"]: d for d in stats["database"]}
    assert by_table["appointments"]["budget"]["level"] == "over"
    assert by_table["patients"]["budget"]["level"] == "ok"
    assert [a["subject"] for a in stats["alerts"] if a["kind"].startswith("db_")] == ["SELECT appointments"]
    assert "Database operations over budget" in render(stats)


def test_latency_critical_level_replaces_twice_the_budget() -> None:
    rt = _runtime('version: 1\ndefaults: {p95_ms: 100, critical: {p95_ms: 150}}\n')
    assert {0.1, 0.15} <= set(rt.inst.server_duration.bounds)
    for _ in range(40):
        _request(rt, "/x", 200, seconds=0.18)
    stats = summary(rt)
    assert stats["status"] == "unhealthy", stats["alerts"]
    assert "over its critical level 150 ms" in stats["status_reasons"][0]


def test_merged_snapshots_give_the_percentiles_of_all_requests_not_an_average() -> None:
    """Two workers' buckets added give exactly what one histogram of every request gives."""
    rng = random.Random(7)
    one, two, both = _runtime(), _runtime(), _runtime()
    for i in range(3000):
        seconds = rng.lognormvariate(-3.0 if i % 3 else -1.5, 0.8)
        (one if i % 3 else two).inst.server_duration.record(seconds, ("/r", "GET", 200, ""))
        both.inst.server_duration.record(seconds, ("/r", "GET", 200, ""))
    parts = [Snapshot.from_json(json.loads(json.dumps(Snapshot.capture(rt).to_json()))) for rt in (one, two)]
    merged = summary(both, snapshot=Snapshot.merged(parts))
    alone = summary(both)
    for q in ("p50_ms", "p95_ms", "p99_ms", "count", "min_ms", "max_ms"):
        assert _endpoint(merged, "/r")[q] == pytest.approx(_endpoint(alone, "/r")[q]), q
    averaged = (_endpoint(summary(one), "/r")["p95_ms"] + _endpoint(summary(two), "/r")["p95_ms"]) / 2
    assert abs(averaged - _endpoint(alone, "/r")["p95_ms"]) > 10  # what averaging would have said
    assert merged["processes"] == 2


def test_a_window_subtracts_what_came_before() -> None:
    rt = _runtime()
    for _ in range(5):
        _request(rt, "/a", 200, seconds=2.0)
    base = Snapshot.capture(rt)
    for _ in range(3):
        _request(rt, "/a", 404, seconds=0.02)
    stats = summary(rt, base)
    entry = _endpoint(stats, "/a")
    assert (entry["count"], entry["client_errors"]) == (3, 3)
    # min/max of a window are narrowed to the buckets its requests fell in.
    assert entry["max_ms"] <= 25.0 and entry["p95_ms"] <= 25.0


def test_operations_are_in_the_stats_and_the_report() -> None:
    rt = _runtime()
    for i in range(10):
        rt.inst.operation_duration.record(0.05, ("tasks.create", "ValueError" if i == 0 else ""))
    stats = summary(rt)
    (op,) = stats["operations"]
    assert (op["name"], op["count"], op["errors"], op["error_rate"]) == ("tasks.create", 10, 1, 0.1)
    assert "tasks.create" in render(stats)


def test_top_and_score() -> None:
    rt = _runtime()
    for _ in range(10):
        _request(rt, "/fast", 200, seconds=0.01)
        _request(rt, "/slow", 200, seconds=3.0)
        _request(rt, "/mid", 200, seconds=0.4)
    top = summary(rt, top=2)
    assert [e["route"] for e in top["endpoints"]] == ["/slow", "/mid"]
    # Apdex with T = a quarter of the 1 s slow threshold: fast satisfied, mid tolerated, slow frustrated.
    assert top["score"] == round(100 * (10 + 10 / 2) / 30)
    assert summary(_runtime())["score"] is None


def test_history_keeps_a_bounded_thinning_record() -> None:
    history = History()
    start = 1_000_000.0
    for minute in range(200):
        history.add(Snapshot(at=start + 60 * minute, started=start))
    assert len(history.entries) <= 10 + 13
    now = start + 60 * 199
    assert history.at(now - 60 * 3.5).at == now - 60 * 4  # minute resolution recently
    older = history.at(now - 60 * 33)
    assert older is not None and now - 60 * 40 <= older.at <= now - 60 * 33
    assert history.at(now - 60 * 500) is None  # before the history: since the start


def test_percentile_of_an_empty_histogram_is_zero() -> None:
    assert percentile((0.1,), [0, 0], 0.95, float("inf"), float("-inf")) == 0.0


def test_stats_url_takes_the_path_from_the_url_or_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_perf._cli.cmd_stats import stats_url

    assert stats_url("http://h:8000", None, None, None) == "http://h:8000/_perf"
    assert stats_url("http://h:8000/admin/perf/", None, 5, 3) == "http://h:8000/admin/perf?minutes=5&top=3"
    monkeypatch.setenv("OTEL_PERF_STATS_PATH", "/_stats")
    assert stats_url("https://h", None, None, None) == "https://h/_stats"
    assert stats_url("https://h", "x", None, None) == "https://h/x"
    with pytest.raises(ValueError, match="not an http"):
        stats_url("h:8000", None, None, None)


def test_budget_gauges_cover_served_routes_levels_and_db() -> None:
    """Alerts and dashboards compare with these: listed routes, served routes held to the defaults."""
    from otel_perf._export import budget_gauges

    rt = _runtime("""
version: 1
defaults: {p95_ms: 500, queries_per_request: 5, critical: {p95_ms: 900}}
routes:
  "GET /listed": {client_error_rate: 0.2}
db:
  "SELECT t": {p95_ms: 10, critical: {p95_ms: 50}}
""")
    _request(rt, "/served", 200)
    rt.inst.db_duration.record(0.001, ("sqlite", "SELECT", "t", ""))
    budget_gauges.register(rt, rt.registry)

    def values(name: str) -> dict[Any, float]:
        gauge = rt.registry.get(name)
        assert isinstance(gauge, Gauge)
        return gauge.values()

    durations = values("perf.budget.duration")
    assert durations[("/served", "GET", "p95", "target")] == 0.5
    assert durations[("/served", "GET", "p95", "critical")] == 0.9
    assert durations[("/listed", "GET", "p95", "target")] == 0.5
    assert values("perf.budget.queries_per_request") == {("/listed", "GET", "target"): 5,
                                                          ("/served", "GET", "target"): 5}  # fmt: skip
    assert values("perf.budget.client_error_rate") == {("/listed", "GET", "target"): 0.2}
    assert values("perf.budget.db.duration") == {("SELECT", "t", "p95", "target"): 0.01,
                                                  ("SELECT", "t", "p95", "critical"): 0.05}  # fmt: skip


def test_merged_workers_keep_jobs_caches_outgoing_and_operations() -> None:
    """Two workers' snapshots, each through JSON as between processes, merged: every section adds up."""
    from otel_perf._core.caches import Caches

    parts = []
    for worker in range(2):
        rt = _runtime()
        _request(rt, "/orders", 200)
        rt.inst.job_duration.record(0.2, ("background", "mail.send", "ValueError" if worker else ""))
        rt.inst.job_queries.record(3, ("background", "mail.send"))
        Caches(rt).read("redis", "127.0.0.1:6379/0", hits=3, misses=1)
        rt.inst.client_duration.record(0.05, ("api.example", "GET", 503 if worker else 200, "", 443, "1.1"))
        rt.inst.throttled.add(1, ("api.example",))
        rt.inst.ratelimit_remaining.set(10.0 * (worker + 1), ("api.example",))
        dims = (("plan", "pro"),) if worker else ()
        rt.inst.operation_duration.record(0.01, ("checkout", "", dims))
        parts.append(Snapshot.from_json(json.loads(json.dumps(Snapshot.capture(rt).to_json()))))
    stats = summary(_runtime(), snapshot=Snapshot.merged(parts))

    (job,) = stats["jobs"]
    assert (job["name"], job["count"], job["errors"], job["mean_queries"]) == ("mail.send", 2, 1, 3.0)
    (cache,) = stats["caches"]
    assert (cache["hits"], cache["misses"], cache["hit_ratio"]) == (6, 2, 0.75)
    (host,) = stats["outgoing"]
    assert (host["host"], host["count"], host["errors"], host["throttled"]) == ("api.example", 2, 1, 2)
    assert host["ratelimit"]["remaining"] == 10.0  # the lowest any worker saw
    (op,) = stats["operations"]
    assert (op["name"], op["count"]) == ("checkout", 2)
    assert _endpoint(stats, "/orders")["count"] == 2 and stats["processes"] == 2


def test_telemetry_dropped_before_a_window_is_not_in_it() -> None:
    """One batch dropped during a collector outage: after a reset (or ?minutes= past it) the
    window is healthy again; the dropped count was carried whole into every window."""
    rt = _runtime()
    for _ in range(30):
        _request(rt, "/a", 200)
    base = Snapshot.capture(rt)
    base.telemetry = {"traces": {"exported": 100.0, "dropped": 512.0, "export_failures": 1.0,
                                 "queue_size": 3.0, "queue_capacity": 2048.0}}  # fmt: skip
    for _ in range(30):
        _request(rt, "/a", 200)
    now = Snapshot.capture(rt)
    now.telemetry = {"traces": {"exported": 160.0, "dropped": 512.0, "export_failures": 1.0,
                                "queue_size": 7.0, "queue_capacity": 2048.0}}  # fmt: skip
    stats = summary(rt, base, snapshot=now)
    assert stats["telemetry"]["traces"] == {"exported": 60.0, "dropped": 0.0, "export_failures": 0.0,
                                            "queue_size": 7.0, "queue_capacity": 2048.0}  # fmt: skip
    assert (stats["status"], stats["alerts"]) == ("healthy", [])
    assert summary(rt, snapshot=now)["status"] == "degraded"  # since the start: the drop is in it


def test_the_health_path_judges_the_last_five_minutes() -> None:
    """A batch dropped six minutes ago degrades the stats since the start, not the health path:
    a load balancer probing ``?fail=degraded`` gets the service back once the outage is over."""
    from otel_perf._export.stats_endpoint import HEALTH_MINUTES, StatsEndpoint
    from otel_perf._setup.providers import Health

    rt = _runtime(OTEL_PERF_HEALTH_PATH="/healthz", OTEL_PERF_STATS_PATH="/_perf",
                  OTEL_PERF_STATS_TOKEN="t" * 16)  # fmt: skip
    rt.health = Health(rt.registry, 60.0)
    for _ in range(30):
        _request(rt, "/a", 200)
    rt.health.failed("traces", 512, "connection refused")
    endpoint = StatsEndpoint(rt)
    before = Snapshot.capture(rt)
    before.at -= 60.0 * (HEALTH_MINUTES + 1)  # taken by the history thread six minutes ago
    endpoint.share.history.add(before)
    for _ in range(30):
        _request(rt, "/a", 200)

    status, _, body = endpoint.respond("GET", "/healthz", "fail=degraded", [])
    assert (status, json.loads(body)["status"]) == (200, "healthy")
    assert endpoint.stats()["status"] == "degraded"  # since the start: the drop is in it

    rt.health.failed("traces", 10, "connection refused")  # dropping again: degraded now
    endpoint._health = (0.0, {})  # past the one-second answer cache
    status, _, body = endpoint.respond("GET", "/healthz", "fail=degraded", [])
    assert (status, json.loads(body)["status"]) == (503, "degraded")
