"""Issue 17 (and #16's opentelemetry-instrument part): official instrumentations beside ours.

Every installed official instrumentation is loaded, except those a row of ours replaces
(tests/test_celery_e2e.py has the official Celery instrumentation's spans in the request's
trace; tests/test_redis_e2e.py the official Redis one replaced by ours).  Under
``otel-perf-instrument`` and under
``opentelemetry-instrument`` with our distro, with the official FastAPI, requests and
SQLAlchemy instrumentations installed (SQLAlchemy 2.0, which the official one supports) and
``OTEL_SEMCONV_STABILITY_OPT_IN=http/dup``: one SERVER span per request, one CLIENT span per
outgoing call, one DB span and one ``db.client.operation.duration`` point per statement, the
URL attributes of an official instrumentation's spans (urllib's ``url.full`` and ``http.url``)
redacted, and not one warning.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from support.launch import APPS, BIN, Service, sqlite_urls
from support.otlp_receiver import OTLPReceiver, Span
from support.procs import AppProcess, free_port, skip_or_fail

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def official_urllib_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder holding the official urllib instrumentation (of this contrib release, or the
    newest before it the package index has), to put on a child's PYTHONPATH: an official
    instrumentation ours does not replace, whose spans carry the URL."""
    target = tmp_path_factory.mktemp("official-urllib")
    contrib = metadata.version("opentelemetry-instrumentation")
    release = contrib.split("b")[0]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", str(target), f"opentelemetry-instrumentation-urllib>={release}b0,<={contrib}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        skip_or_fail(f"could not install opentelemetry-instrumentation-urllib: {result.stderr[-500:]}")
    return str(target)


def _start(
    launcher: str,
    app_process: Callable[..., AppProcess],
    receiver: OTLPReceiver,
    db_url: str,
    python_path: list[str],
) -> Service:
    """The sample service under ``launcher``, calling itself as its peer."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **receiver.exporter_env(),
        "OTEL_SERVICE_NAME": "svc",
        "OTEL_PERF__RAISE_ERRORS": "1",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "http/dup",
        "APP_DATABASE_URL": db_url,
        "APP_PEER_URL": base,
        "PYTHONPATH": os.pathsep.join([*python_path, str(APPS)]),
    }
    args = [
        str(BIN / launcher),
        str(BIN / "uvicorn"),
        "service:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if launcher == "opentelemetry-instrument":  # the dev extra installs opentelemetry-distro too
        env |= {"OTEL_PYTHON_DISTRO": "otel_perf", "OTEL_PYTHON_CONFIGURATOR": "otel_perf"}
    proc = app_process(args, env, name=launcher)
    proc.wait_http(base + "/hello", timeout=30)
    return Service(proc, base)


@pytest.mark.parametrize("launcher", ["otel-perf-instrument", "opentelemetry-instrument"])
def test_one_set_of_spans_redacted_urls_and_no_warning_under_either_launcher(
    launcher: str,
    otlp_receiver: OTLPReceiver,
    app_process: Callable[..., AppProcess],
    tmp_path: Path,
    sqlalchemy_20_path: str,
    official_urllib_path: str,
) -> None:
    for official in ("fastapi", "requests", "sqlalchemy"):  # installed, so there is something to skip
        assert metadata.version(f"opentelemetry-instrumentation-{official}")
    url, _ = sqlite_urls(tmp_path)
    svc = _start(launcher, app_process, otlp_receiver, url, [sqlalchemy_20_path, official_urllib_path])

    def trace_of(response: httpx.Response, servers: int) -> list[Span]:
        trace_id = response.headers["traceresponse"].split("-")[1]

        def whole() -> list[Span]:
            spans = otlp_receiver.spans(trace_id=trace_id)
            return spans if sum(s.kind == "SERVER" for s in spans) >= servers else []

        otlp_receiver.wait_for(whole, what=f"{servers} server span(s) of trace {trace_id}")
        # A later request's spans are exported after this one's: anything of this trace is in.
        httpx.get(svc.base + "/hello")
        otlp_receiver.wait_for(
            lambda: (
                otlp_receiver.spans(trace_id=trace_id) and len(otlp_receiver.spans(name="GET /hello")) >= 1
            ),
            what="a later request exported",
        )
        return otlp_receiver.spans(trace_id=trace_id)

    # A request with one statement: one SERVER span, one DB span, one duration point.
    spans = trace_of(httpx.get(svc.base + "/items/1?token=incoming-S3KR1T"), 1)
    assert sorted((s.kind, s.name, s.scope) for s in spans) == [
        ("CLIENT", "SELECT orders", "otel_perf"),
        ("SERVER", "GET /items/{item_id}", "otel_perf"),
    ]
    select = {"db.collection.name": "orders", "db.operation.name": "SELECT"}
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("db.client.operation.duration", select),
        what="db.client.operation.duration for the SELECT",
    )
    # Creating the tables inserted into orders once; the request selected once: one point each.
    selects = [
        p
        for p in otlp_receiver.latest_points("db.client.operation.duration", {"db.operation.name": "SELECT"})
        if p.attributes.get("db.collection.name") == "orders"
    ]
    assert [(p.scope, p.count) for p in selects] == [("otel_perf", 1)]

    # An outgoing call with requests: one CLIENT span, ours, the peer's SERVER span under it.
    spans = trace_of(
        httpx.get(svc.base + "/outgoing/requests", params={"path": "/hello?token=out-S3KR1T"}), 2
    )
    clients = [s for s in spans if s.kind == "CLIENT"]
    assert [(c.scope, c.attributes["url.full"].split("?")[1]) for c in clients] == [
        ("otel_perf", "token=REDACTED")
    ]
    assert sorted(s.kind for s in spans) == ["CLIENT", "SERVER", "SERVER"]

    # An official instrumentation ours does not replace (urllib): its URL attributes, stable
    # and old (http/dup brings http.url back), leave redacted.
    spans = trace_of(
        httpx.get(svc.base + "/outgoing/urllib", params={"path": "/hello?token=urllib-S3KR1T&x=1"}), 2
    )
    official = [s for s in spans if s.kind == "CLIENT"]
    assert [s.scope for s in official] == ["opentelemetry.instrumentation.urllib"]
    attributes = official[0].attributes
    assert attributes["url.full"].endswith("/hello?token=REDACTED&x=1")
    assert attributes["http.url"].endswith("/hello?token=REDACTED&x=1")
    # (the front's own url.query carries the peer URL as a parameter value, not a secret's name)
    leaked = [s for s in otlp_receiver.spans() if "S3KR1T" in repr(s.attributes)]
    assert [s.attributes["url.path"] for s in leaked] == ["/outgoing/requests", "/outgoing/urllib"]

    svc.proc.stop()
    lines = svc.proc.stderr().splitlines()
    assert not [line for line in lines if "WARNING" in line or "ERROR" in line or "Traceback" in line], (
        svc.proc.stderr()[-3000:]
    )
