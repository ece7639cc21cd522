"""Issue 19: Django and Flask under every process model, exact counts per worker.

As tests/test_process_models.py does for FastAPI: each test serves the app with two workers
(gunicorn sync and gthread, with and without ``--preload``; uvicorn's workers for Django's ASGI
handler), sends N requests each on a new connection, and checks per worker process (the pid
each response reports) that its spans, duration histogram and log records were exported under
its own ``service.instance.id`` and equal the requests it answered: none lost, none doubled.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import pytest

from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, free_port, until_serving
from support.web import SERVERS, django_env, flask_env, serve

pytestmark = pytest.mark.slow

DURATION = "http.server.request.duration"
N = 40
LOG = "serving pid"


def _send(base: str, path: str, n: int) -> Counter[int]:
    per_pid: Counter[int] = Counter()
    for _ in range(n):
        with httpx.Client() as client:  # a new connection each time: requests spread over workers
            r = client.get(base + path)
        assert r.status_code == 200, r.text
        per_pid[r.json()["pid"]] += 1
    return per_pid


def _per_instance(receiver: OTLPReceiver, route: str) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}

    def entry(resource: Mapping[str, object]) -> dict[str, object]:
        e = out.setdefault(
            str(resource["service.instance.id"]), {"pids": set(), "spans": 0, "count": 0, "logs": 0}
        )
        pids = e["pids"]
        assert isinstance(pids, set)
        pids.add(resource.get("process.pid"))
        return e

    for span in receiver.spans(name=f"GET {route}", kind="SERVER"):
        e = entry(span.resource)
        e["spans"] = int(str(e["spans"])) + 1
    for point in receiver.latest_points(DURATION, {"http.route": route}):
        e = entry(point.resource)
        e["count"] = int(str(e["count"])) + (point.count or 0)
    for record in receiver.logs(LOG):
        e = entry(record.resource)
        e["logs"] = int(str(e["logs"])) + 1
    return out


def _check_exact(receiver: OTLPReceiver, route: str, per_pid: Counter[int]) -> None:
    n = sum(per_pid.values())

    def counts() -> tuple[int, int, int]:
        return (
            receiver.histogram_count(DURATION, {"http.route": route}),
            len(receiver.spans(name=f"GET {route}", kind="SERVER")),
            len(receiver.logs(LOG)),
        )

    try:
        receiver.wait_for(lambda: counts() == (n, n, n), timeout=20, what=f"exactly {n} requests")
    except AssertionError:
        raise AssertionError(
            f"(metric count, spans, logs) = {counts()}, expected {n} each; served per pid {dict(per_pid)}; "
            f"exported per instance {_per_instance(receiver, route)}"
        ) from None
    time.sleep(1.5)  # three more metric exports: cumulative totals must not grow
    assert counts() == (n, n, n)
    assert len(per_pid) == 2, f"requests were served by {dict(per_pid)} only"
    exported = _per_instance(receiver, route)
    by_pid: dict[object, list[str]] = {}
    for instance, e in exported.items():
        pids = e["pids"]
        assert isinstance(pids, set) and len(pids) == 1, f"instance {instance} exported under pids {pids}"
        by_pid.setdefault(next(iter(pids)), []).append(instance)
    for pid, served in per_pid.items():
        instances = by_pid.get(pid, [])
        assert len(instances) == 1, f"worker {pid} exported under instance ids {instances}"
        e = exported[instances[0]]
        assert (e["spans"], e["count"], e["logs"]) == (served, served, served), (pid, e, dict(per_pid))


DJANGO_SERVERS = ["gunicorn", "gunicorn-preload", "gthread", "gthread-preload", "uvicorn-workers"]


@pytest.mark.parametrize("server", DJANGO_SERVERS)
def test_django_two_workers_exact(
    server: str, otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    env = django_env(str(tmp_path / "db.sqlite3"))
    target = "djsite.asgi:application" if server.startswith("uvicorn") else "djsite.wsgi"
    port = free_port()
    _, base = serve(app_process, otlp_receiver, SERVERS[server](target, port), port, env, ready="/hello/")
    until_serving(base + "/polls/1/", 2)
    _check_exact(otlp_receiver, "polls/pid/", _send(base, "/polls/pid/", N))


@pytest.mark.parametrize("server", ["gunicorn", "gunicorn-preload", "gthread", "gthread-preload"])
def test_flask_two_workers_exact(
    server: str, otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    env = flask_env(f"sqlite:///{tmp_path / 'app.db'}")
    port = free_port()
    _, base = serve(
        app_process, otlp_receiver, SERVERS[server]("flask_app:app", port), port, env, ready="/hello"
    )
    until_serving(base + "/orders/1", 2)
    _check_exact(otlp_receiver, "/pid", _send(base, "/pid", N))
