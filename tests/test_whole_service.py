"""Issue 21: the stats endpoint answers for the whole service, whichever worker takes the request.

Real servers (``uvicorn --workers 2``, gunicorn's uvicorn worker with and without
``--preload``) run ``tests/apps/workers_app.py`` under the launcher, exporting to a real OTLP
receiver.  N requests (each on a new connection, so both workers serve some) must show as N in
the stats whichever worker answers, and the p95 must be the one of the *merged* distribution:
the test merges the buckets every worker exported and computes the percentile the same way.
``reset`` resets every worker.  The public health path answers without a token and says
nothing but liveness, status and score.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from otel_perf._analysis.stats import percentile
from support.launch import APPS, BIN, launcher, sqlite_urls, start_service
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, clean_environ, free_port

pytestmark = pytest.mark.slow

TOKEN = "whole-service-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTE = "/work/{ms}"
DURATION = "http.server.request.duration"
#: Durations (ms) sent, spread over several buckets of the default bounds.
PLAN = [1, 3, 8, 15, 30, 60, 90, 120] * 5


def _start(
    app_process: Callable[..., AppProcess], receiver: OTLPReceiver, server: list[str], port: int
) -> tuple[AppProcess, str]:
    env = {
        "OTEL_SERVICE_NAME": "whole",
        "OTEL_PERF__RAISE_ERRORS": "1",
        "PYTHONPATH": str(APPS),
        "OTEL_PERF_STATS_PATH": "/_perf",
        "OTEL_PERF_STATS_TOKEN": TOKEN,
        "OTEL_PERF_HEALTH_PATH": "/healthz",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        **receiver.exporter_env(),
    }
    proc = app_process([launcher(), *server], env, name="whole")
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + "/hello", timeout=60)
    return proc, base


def _send(base: str, plan: list[int]) -> Counter[int]:
    per_pid: Counter[int] = Counter()
    for ms in plan:
        with httpx.Client() as client:  # a new connection each time: requests spread over the workers
            r = client.get(f"{base}/work/{ms}")
        assert r.status_code == 200, r.text
        per_pid[r.json()["pid"]] += 1
    return per_pid


def _stats(base: str, query: str = "") -> dict[str, object]:
    r = httpx.get(base + "/_perf" + query, headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, dict)
    return body


def _entry(stats: dict[str, object]) -> dict[str, object]:
    endpoints = stats["endpoints"]
    assert isinstance(endpoints, list)
    return next(e for e in endpoints if e["route"] == ROUTE)


def _merged_exported_p95(receiver: OTLPReceiver, n: int) -> tuple[float, list[float]]:
    """p95 (ms) of the buckets every worker exported for the route, merged, and the bounds."""
    receiver.wait_for(
        lambda: receiver.histogram_count(DURATION, {"http.route": ROUTE}) == n,
        timeout=30,
        what=f"{n} requests in the exported histograms",
    )
    points = receiver.latest_points(DURATION, {"http.route": ROUTE})
    bounds = points[0].explicit_bounds
    buckets = [0] * (len(bounds) + 1)
    for p in points:
        assert p.explicit_bounds == bounds
        buckets = [a + b for a, b in zip(buckets, p.bucket_counts, strict=True)]
    low = min(p.min for p in points if p.min is not None)
    high = max(p.max for p in points if p.max is not None)
    return percentile(bounds, buckets, 0.95, low, high) * 1000.0, bounds


def _check_whole_service(base: str, receiver: OTLPReceiver) -> None:
    per_pid = _send(base, PLAN)
    n = len(PLAN)
    assert len(per_pid) == 2, f"both workers must serve some requests: {dict(per_pid)}"
    exported_p95, bounds = _merged_exported_p95(receiver, n)
    for _ in range(6):  # several answers, from whichever worker takes each
        stats = _stats(base)
        workers = stats["workers"]
        assert isinstance(workers, dict)
        assert workers["scope"] == "server" and workers["missing"] == [], workers
        assert set(workers["pids"]) == set(per_pid), (workers, dict(per_pid))
        entry = _entry(stats)
        assert entry["count"] == n, (entry, dict(per_pid))
        # The same buckets merged the same way: the same p95 (not an average of the workers' p95s) ...
        assert abs(float(str(entry["p95_ms"])) - exported_p95) < 0.01, (entry, exported_p95)
        # ... which is within one bucket of the exact one.
        exact = sorted(PLAN)[int(0.95 * n) - 1]
        edges = [0.0, *[b * 1000 for b in bounds], float("inf")]
        i = next(i for i in range(len(edges) - 1) if edges[i] <= exact <= edges[i + 1])
        assert edges[max(0, i - 1)] <= float(str(entry["p95_ms"])) <= edges[min(len(edges) - 1, i + 2)]
        totals, endpoints = stats["totals"], stats["endpoints"]
        assert isinstance(totals, dict) and isinstance(endpoints, list)
        assert totals["requests"] == sum(e["count"] for e in endpoints) == n + 1  # and the readiness probe
    # Reset resets every worker: the next window holds exactly what follows it.
    reset = httpx.post(base + "/_perf/reset", headers=AUTH, timeout=10)
    assert reset.status_code == 200 and reset.json() == {"reset": True, "workers": 2}, reset.text
    _send(base, [5] * 12)
    for _ in range(4):  # both workers served before the reset: both were reset

        assert _entry(_stats(base))["count"] == 12
    # A window of the last minutes still counts every worker (and the reset bounds it).
    window = _stats(base, "?minutes=5&top=1")
    assert _entry(window)["count"] == 12 and window["minutes"] == 5
    assert len(window["endpoints"]) == 1  # type: ignore[arg-type]


def test_uvicorn_two_workers_answer_for_the_whole_service(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess]
) -> None:
    port = free_port()
    server = [str(BIN / "uvicorn"), "workers_app:app", "--host", "127.0.0.1", "--port", str(port),
              "--workers", "2"]  # fmt: skip
    _check_whole_service(_start(app_process, otlp_receiver, server, port)[1], otlp_receiver)


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "fork"])
def test_gunicorn_two_workers_answer_for_the_whole_service(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], preload: bool
) -> None:
    port = free_port()
    server = [str(BIN / "gunicorn"), "-w", "2", "-k", "uvicorn.workers.UvicornWorker", "-b",
              f"127.0.0.1:{port}", "workers_app:app"]  # fmt: skip
    if preload:
        server.insert(1, "--preload")
    _check_whole_service(_start(app_process, otlp_receiver, server, port)[1], otlp_receiver)


def test_the_folder_the_workers_share_is_private_and_removed_with_the_server(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess]
) -> None:
    port = free_port()
    server = [str(BIN / "uvicorn"), "workers_app:app", "--host", "127.0.0.1", "--port", str(port),
              "--workers", "2"]  # fmt: skip
    proc, base = _start(app_process, otlp_receiver, server, port)
    _send(base, [1] * 6)
    _stats(base)
    root = f"/tmp/otel-perf-{os.geteuid()}"
    # The launcher execs the server: its pid is the supervisor's, which names the folder.
    ours = [os.path.join(root, name) for name in os.listdir(root) if name.startswith(f"{proc.pid}-")]
    assert len(ours) == 1, os.listdir(root)
    assert os.stat(ours[0]).st_mode & 0o777 == 0o700
    assert os.stat(root).st_mode & 0o777 == 0o700

    def sockets() -> list[str]:
        return sorted(name for name in os.listdir(ours[0]) if name.endswith(".sock"))

    # Each worker joins once it serves its app; multiprocessing's helper processes never do.
    otlp_receiver.wait_for(lambda: len(sockets()) == 2, timeout=20, what="both workers' sockets")
    time.sleep(1.0)
    assert len(sockets()) == 2, sockets()
    proc.stop()
    assert not os.path.exists(ours[0])


def test_health_path_answers_without_a_token_and_says_nothing_else(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess]
) -> None:
    port = free_port()
    server = [str(BIN / "uvicorn"), "workers_app:app", "--host", "127.0.0.1", "--port", str(port),
              "--workers", "2"]  # fmt: skip
    _, base = _start(app_process, otlp_receiver, server, port)
    _send(base, [1] * 6)
    r = httpx.get(base + "/healthz")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"alive", "status", "score"}, body
    assert body["alive"] is True and body["status"] == "healthy" and 0 <= body["score"] <= 100
    for leak in ("/work", "items", "workers_app", "SELECT", "whole", TOKEN):
        assert leak not in r.text, r.text
    assert httpx.get(base + "/healthz?fail=degraded").status_code == 200
    assert httpx.get(base + "/healthz?fail=nonsense").status_code == 400
    assert httpx.post(base + "/healthz").status_code == 405
    # The stats path still wants its token.
    assert httpx.get(base + "/_perf").status_code == 401


def _cli(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = clean_environ({"OTEL_PERF_STATS_TOKEN": token} if token is not None else {})
    return subprocess.run([str(BIN / "otel-perf"), "stats", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def test_client_errors_in_stats_and_metrics_and_otel_perf_stats_prints_the_table(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """404s and 401s are client errors in the stats and the exported metric (not server errors),
    and ``otel-perf stats URL`` prints the exit report's table from the running service."""
    db_url, _ = sqlite_urls(tmp_path)
    env = {"OTEL_PERF_STATS_PATH": "/_perf", "OTEL_PERF_STATS_TOKEN": TOKEN, "OTEL_TRACES_EXPORTER": "none"}
    svc = start_service(app_process, otlp_receiver, db_url, env=env)
    for _ in range(10):
        assert httpx.get(svc.base + "/no/such/page").status_code == 404
    for _ in range(20):
        assert httpx.get(svc.base + "/private").status_code == 401
    stats = _stats(svc.base)
    endpoints = stats["endpoints"]
    assert isinstance(endpoints, list)
    private = next(e for e in endpoints if e["route"] == "/private")
    assert (private["count"], private["client_errors"], private["errors"]) == (20, 20, 0)
    unmatched = next(e for e in endpoints if e["route"] == "(unmatched)")
    assert (unmatched["client_errors"], unmatched["errors"]) == (10, 0)
    totals = stats["totals"]
    assert isinstance(totals, dict) and (totals["client_errors"], totals["errors"]) == (30, 0)
    assert stats["status"] == "degraded"  # every request of a matched route refused
    # The exported histogram carries the status code and no error.type: 4xx are not server errors there.
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count(DURATION, {"http.route": "/private"}) == 20,
        timeout=30, what="the 401s exported",
    )  # fmt: skip
    points = otlp_receiver.latest_points(DURATION, {"http.route": "/private"})
    assert {p.attributes.get("http.response.status_code") for p in points} == {401}
    assert all("error.type" not in p.attributes for p in points)

    out = _cli(svc.base)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("otel-perf report: service 'service'") and "DEGRADED" in lines[0]
    assert "  - GET /private: client error rate (4xx) 100.0%" in lines
    header = next(line for line in lines if line.startswith("endpoint"))
    assert header.split() == ["endpoint", "count", "rpm", "5xx", "4xx", "p50", "ms", "p95", "ms", "p99", "ms",
                              "queries", "slow", "budget"]  # fmt: skip
    row = next(line for line in lines if line.startswith("GET /private"))
    assert row.split()[2] == "20" and row.split()[4:6] == ["0.0%", "100.0%"], row
    failing = _cli(svc.base + "/_perf", "--fail-on", "degraded", "--json")
    assert failing.returncode == 1 and json.loads(failing.stdout)["status"] == "degraded"
    assert _cli(svc.base, "--fail-on", "unhealthy").returncode == 0
    no_token = _cli(svc.base, token=None)
    assert no_token.returncode == 2 and "OTEL_PERF_STATS_TOKEN" in no_token.stderr
    wrong = _cli(svc.base, token="x" * 20)
    assert wrong.returncode == 3 and "HTTP 401" in wrong.stderr


def test_health_path_without_a_stats_token(
    app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """The public health path works on its own: no token set, the stats path left to the app."""
    db_url, _ = sqlite_urls(tmp_path)
    env = {"OTEL_PERF_HEALTH_PATH": "/healthz", "OTEL_PERF_STATS_PATH": "/_perf"}
    svc = start_service(app_process, None, db_url, env=env)
    assert httpx.get(svc.base + "/items/1").status_code == 200
    health = httpx.get(svc.base + "/healthz")
    assert health.status_code == 200 and set(health.json()) == {"alive", "status", "score"}
    assert httpx.get(svc.base + "/_perf").status_code == 404  # the app's own answer: stats are off
