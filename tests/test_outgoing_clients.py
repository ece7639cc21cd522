"""Issue 17: outgoing HTTP beyond httpx, over real sockets between two instrumented services.

The front service calls its peer (``APP_PEER_URL``) with requests (module function and
session), urllib3 and the aiohttp client: each call is one CLIENT span under the request's
SERVER span, and the peer's SERVER span is its child (W3C ``traceparent``); the call is
measured in ``http.client.request.duration`` by ``server.address``, its URL redacted, the
peer's rate-limit headers turned into gauges and its 429s counted, and the stats endpoint's
outgoing section counts it.  The exporters' own requests (over requests/urllib3) are never
recorded, and the per-library excluded-URL variables are honoured.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support.launch import Service, sqlite_urls, start_service
from support.otlp_receiver import OTLPReceiver, Span
from support.procs import AppProcess

pytestmark = pytest.mark.slow
TOKEN = "t0ken-for-the-tests"
STATS_ENV = {"OTEL_PERF_STATS_PATH": "/_perf", "OTEL_PERF_STATS_TOKEN": TOKEN}
SYNC_CLIENTS = ("requests", "requests-session", "urllib3")
SECRET_PATH = "/items/3?token=outgoing-S3KR1T&page=1"


def _call(front: Service, client: str, path: str, **params: str) -> int:
    """Make ``front`` GET ``PEER + path`` with ``client``; the status the peer answered."""
    if client.startswith("aiohttp"):
        params = {"raise_for_status": "true"} if client == "aiohttp-raise" else {}
        r = httpx.get(front.base + "/outgoing-async/aiohttp", params={"path": path, **params}, timeout=20)
    else:
        r = httpx.get(front.base + f"/outgoing/{client}", params={"path": path}, timeout=20)
    assert r.status_code == 200, r.text
    status: int = r.json()["status"]
    return status


def _of(spans: list[Span], service: str) -> list[Span]:
    return [s for s in spans if s.resource.get("service.name") == service]


def _stats(svc: Service) -> dict:  # type: ignore[type-arg]
    r = httpx.get(svc.base + "/_perf", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def pair(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> tuple[Service, Service]:
    url, _ = sqlite_urls(tmp_path)
    peer = start_service(app_process, otlp_receiver, url, name="peer")
    front = start_service(app_process, otlp_receiver, url, peer=peer.base, name="front", env=STATS_ENV)
    return front, peer


@pytest.mark.matrix  # requests, urllib3 and aiohttp on the oldest and newest releases
def test_every_client_joins_the_peer_trace_once_with_redacted_url(
    pair: tuple[Service, Service], otlp_receiver: OTLPReceiver
) -> None:
    front, _peer = pair
    clients = (*SYNC_CLIENTS, "aiohttp")
    for client in clients:
        r = httpx.get(
            front.base + (f"/outgoing/{client}" if client != "aiohttp" else "/outgoing-async/aiohttp"),
            params={"path": SECRET_PATH},
        )
        assert r.json()["status"] == 200
        trace_id = r.headers["traceresponse"].split("-")[1]

        def whole_trace(t: str = trace_id) -> list[Span]:
            spans = otlp_receiver.spans(trace_id=t)
            servers = [s for s in spans if s.kind == "SERVER"]
            return spans if len(servers) == 2 else []

        spans = otlp_receiver.wait_for(whole_trace, what=f"front and peer server spans via {client}")
        front_server = next(s for s in _of(spans, "front") if s.kind == "SERVER")
        peer_server = next(s for s in _of(spans, "peer") if s.kind == "SERVER")
        http_clients = [s for s in _of(spans, "front") if s.kind == "CLIENT" and "url.full" in s.attributes]
        # One CLIENT span per call: requests over urllib3 is recorded once, by requests.
        assert len(http_clients) == 1, (client, [(s.name, s.scope, s.attributes) for s in http_clients])
        span = http_clients[0]
        assert span.parent_span_id == front_server.span_id, client
        assert peer_server.parent_span_id == span.span_id, client
        assert span.name == "GET"
        assert span.scope == "otel_perf"
        assert span.attributes["http.request.method"] == "GET"
        assert span.attributes["http.response.status_code"] == 200
        assert span.attributes["server.address"] == "127.0.0.1"
        assert span.attributes["server.port"] == int(front.proc.env["APP_PEER_URL"].rsplit(":", 1)[1])
        assert span.attributes["network.protocol.version"] == "1.1"
        assert span.attributes["url.full"].endswith("/items/3?token=REDACTED&page=1"), client
        assert "S3KR1T" not in repr(span.attributes)
        assert "http.url" not in span.attributes
        if client.startswith("requests"):  # as the official requests instrumentation's spans
            assert span.attributes["user_agent.original"].startswith("python-requests/"), client
            assert span.attributes["network.peer.address"] == "127.0.0.1", client
            assert span.attributes["network.peer.port"] == span.attributes["server.port"], client
    otlp_receiver.wait_for(
        lambda: (
            otlp_receiver.histogram_count(
                "http.client.request.duration",
                {
                    "server.address": "127.0.0.1",
                    "http.request.method": "GET",
                    "http.response.status_code": 200,
                },
            )
            >= len(clients)
        ),
        what="one client duration per call",
    )
    outgoing = {o["host"]: o for o in _stats(front)["outgoing"]}
    assert outgoing["127.0.0.1"]["count"] == len(clients), outgoing
    # The body sizes, from urllib3 alone, as the official instrumentations record them (requests,
    # aiohttp and httpx record none; requests over urllib3 is requests' call): the GET's empty
    # body, and the peer's Content-Length
    wanted = {"server.address": "127.0.0.1", "http.response.status_code": 200}
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("http.client.response.body.size", wanted) >= 1,
        what="urllib3's response size",
    )
    assert otlp_receiver.histogram_count("http.client.response.body.size", wanted) == 1
    assert otlp_receiver.histogram_sum("http.client.response.body.size", wanted) > 0
    assert otlp_receiver.histogram_count("http.client.request.body.size", wanted) == 1
    assert otlp_receiver.histogram_sum("http.client.request.body.size", wanted) == 0


@pytest.mark.parametrize("client", ["requests", "urllib3", "aiohttp", "aiohttp-raise"])
def test_rate_limit_headroom_and_429s_from_every_client(
    client: str, otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    url, _ = sqlite_urls(tmp_path)
    upstream = start_service(app_process, None, url, name="upstream")
    front = start_service(app_process, otlp_receiver, url, peer=upstream.base, name="front", env=STATS_ENV)
    statuses = [_call(front, client, "/upstream/quota") for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    host = {"server.address": "127.0.0.1"}
    otlp_receiver.wait_for(
        lambda: otlp_receiver.sum_value("perf.http.client.throttled", host) == 2,
        what="two throttled responses",
    )
    remaining = otlp_receiver.latest_points("perf.http.client.ratelimit.remaining", host)
    limit = otlp_receiver.latest_points("perf.http.client.ratelimit.limit", host)
    reset = otlp_receiver.latest_points("perf.http.client.ratelimit.reset", host)
    assert remaining[0].value == 0 and limit[0].value == 3 and reset[0].value == 30
    otlp_receiver.wait_for(
        lambda: (
            otlp_receiver.histogram_count(
                "http.client.request.duration",
                {**host, "http.response.status_code": 429, "error.type": "429"},
            )
            == 2
            and otlp_receiver.histogram_count("http.client.request.duration", host) == 5
        ),
        what="five client durations, two of them 429s",
    )
    # Spans leave in exports of their own: wait for them too, the metrics may arrive first.
    throttled = otlp_receiver.wait_for_spans(
        2,
        kind="CLIENT",
        where=lambda s: s.attributes.get("http.response.status_code") == 429,
        what="two CLIENT spans of 429 responses",
    )
    assert len(throttled) == 2 and all(s.status_code == "ERROR" for s in throttled)
    outgoing = _stats(front)["outgoing"][0]
    assert outgoing["count"] == 5 and outgoing["throttled"] == 2 and outgoing["ratelimit"]["limit"] == 3


def test_the_exporters_own_requests_are_never_recorded(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """The OTLP exporters send over requests/urllib3, which we instrument: the SDK suppresses
    instrumentation around its exports, and no span or metric point may name the collector."""
    url, _ = sqlite_urls(tmp_path)
    collector = f"http://localhost:{otlp_receiver.port}"  # a host name no call of the app uses
    svc = start_service(
        app_process, otlp_receiver, url, env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector}, name="exporting"
    )
    for _ in range(3):
        httpx.get(svc.base + "/items/1")
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("http.server.request.duration") >= 3,
        what="the three requests measured and exported",
    )
    exports = otlp_receiver.request_count("/v1/metrics")
    otlp_receiver.wait_for(
        lambda: otlp_receiver.request_count("/v1/metrics") >= exports + 2,
        what="two more metric exports (each would measure the exports before it)",
    )
    # Spans leave in exports of their own: wait for the requests' ones, not only for the metrics.
    otlp_receiver.wait_for_spans(3, name="GET /items/{item_id}", kind="SERVER")
    assert otlp_receiver.request_count("/v1/traces") >= 1
    names_collector = [
        s
        for s in otlp_receiver.spans()
        if s.attributes.get("server.address") == "localhost"
        or s.attributes.get("server.port") == otlp_receiver.port
        or "/v1/" in str(s.attributes.get("url.full", ""))
    ]
    assert names_collector == []
    assert not otlp_receiver.latest_points("http.client.request.duration")


def test_per_library_excluded_urls(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """OTEL_PYTHON_REQUESTS_EXCLUDED_URLS excludes requests' calls only; the generic
    OTEL_PYTHON_EXCLUDED_URLS applies to a client whose own variable is unset."""
    url, _ = sqlite_urls(tmp_path)
    peer = start_service(app_process, otlp_receiver, url, name="peer")
    front = start_service(
        app_process,
        otlp_receiver,
        url,
        peer=peer.base,
        name="front",
        env={
            "OTEL_PYTHON_REQUESTS_EXCLUDED_URLS": r"/items/4\b",
            "OTEL_PYTHON_URLLIB3_EXCLUDED_URLS": r"/nothing-matches",
            "OTEL_PYTHON_EXCLUDED_URLS": r"/items/5\b",
        },
    )
    cases = [
        ("requests", "/items/4", False),  # its own list
        ("urllib3", "/items/4", True),  # not in urllib3's list
        ("urllib3", "/items/5", True),  # urllib3's own list is set: the generic one does not apply
        ("aiohttp", "/items/5", False),  # no aiohttp list: the generic one applies
        ("aiohttp", "/items/4", True),
    ]
    for client, path, traced in cases:
        r = httpx.get(
            front.base + (f"/outgoing/{client}" if client != "aiohttp" else "/outgoing-async/aiohttp"),
            params={"path": path},
        )
        assert r.json()["status"] == 200
        trace_id = r.headers["traceresponse"].split("-")[1]
        front_server = otlp_receiver.wait_for(
            lambda t=trace_id: [s for s in otlp_receiver.spans(trace_id=t) if s.kind == "SERVER"],
            what=f"front span via {client}",
        )[0]
        item = path.rsplit("/", 1)[1]
        peer_server = otlp_receiver.wait_for(
            lambda i=item, p=front_server: next(
                (
                    s
                    for s in _of(otlp_receiver.spans(kind="SERVER"), "peer")
                    if s.attributes.get("url.path") == f"/items/{i}"
                    and (s.trace_id == p.trace_id or not s.parent_span_id)
                    and s.start_ns >= p.start_ns
                ),
                None,
            ),
            what=f"peer span of {path} via {client}",
        )

        def clients(t: str = trace_id) -> list[Span]:
            spans = otlp_receiver.spans(trace_id=t)
            return [s for s in spans if s.kind == "CLIENT" and "url.full" in s.attributes]

        if traced:  # the CLIENT span may come in an export after the SERVER span's
            otlp_receiver.wait_for(clients, what=f"the CLIENT span via {client}")
            assert len(clients()) == 1 and peer_server.trace_id == trace_id, (client, path)
        else:  # no span and no traceparent: the peer's span starts a trace of its own
            assert clients() == [] and peer_server.parent_span_id == "" and peer_server.trace_id != trace_id
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("http.client.request.duration") == 3,
        what="three measured calls (the excluded ones unmeasured)",
    )
