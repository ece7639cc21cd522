"""The server side of the browser feature, in-process: the script's answer, its configuration
prologue, the HTML ``Server-Timing`` header, the settings, and the ASGI middleware hook."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanContext, TraceFlags

from otel_perf._analysis.budgets import parse_budgets
from otel_perf._config import load
from otel_perf._core.runtime import Runtime, build_instruments
from otel_perf._export.browser import (
    BrowserScript,
    is_html,
    load_bundle,
    sampling_ratio,
    server_timing,
)
from otel_perf._integrations.asgi import PerfMiddleware
from otel_perf._metrics.instruments import Registry

BUNDLE = b"/*bundle*/console.log(1);\n"
PROLOGUE = re.compile(rb"^self\.__otelPerfBrowser=(\{.*?\});\n")


def _script(**kw: Any) -> BrowserScript:
    args: dict[str, Any] = {
        "endpoint": "https://otel.example.com:4318/",
        "path": "/b.js",
        "service_name": "shop-browser",
    }
    return BrowserScript(**(args | kw), bundle=BUNDLE)


def _config(body: bytes) -> dict[str, Any]:
    match = PROLOGUE.match(body)
    assert match, body[:200]
    parsed: dict[str, Any] = json.loads(match.group(1))
    return parsed


def test_the_script_is_the_bundle_behind_a_configuration_prologue() -> None:
    script = _script(environment="prod", ratio=0.25, propagate_origins=["https://api.example.com/"])
    response = script.respond("GET", "/b.js")
    assert response is not None
    status, headers, body = response
    assert status == 200
    assert body.endswith(BUNDLE)
    assert _config(body) == {
        "tracesUrl": "https://otel.example.com:4318/v1/traces",
        "metricsUrl": "https://otel.example.com:4318/v1/metrics",
        "serviceName": "shop-browser",
        "environment": "prod",
        "ratio": 0.25,
        "propagateOrigins": ["https://api.example.com"],
        "bounds": {},
        "version": _config(body)["version"],
    }
    h = dict(headers)
    assert h[b"content-type"] == b"text/javascript; charset=utf-8"
    assert h[b"x-content-type-options"] == b"nosniff"
    assert h[b"content-length"] == str(len(body)).encode()
    assert h[b"cache-control"].startswith(b"public, max-age=")
    assert re.fullmatch(rb'"[0-9a-f]{32}"', h[b"etag"])


def test_other_paths_are_not_answered_and_only_get_and_head_are_allowed() -> None:
    script = _script()
    assert script.respond("GET", "/b.jsx") is None
    assert script.respond("GET", "/") is None
    post = script.respond("POST", "/b.js")
    assert post is not None and post.status == 405 and dict(post.headers)[b"allow"] == b"GET, HEAD"
    head = script.respond("HEAD", "/b.js")
    get = script.respond("GET", "/b.js")
    assert head is not None and get is not None
    assert head.status == 200 and head.body == b"" and head.headers == get.headers


def test_etag_revalidation_and_gzip() -> None:
    script = _script()
    etag = dict(script.respond("GET", "/b.js").headers)[b"etag"]  # type: ignore[union-attr]
    for given in (etag, b"W/" + etag, b'"other", ' + etag):
        cached = script.respond("GET", "/b.js", if_none_match=given)
        assert cached is not None and cached.status == 304 and cached.body == b""
    assert script.respond("GET", "/b.js", if_none_match=b'"other"').status == 200  # type: ignore[union-attr]
    zipped = script.respond("GET", "/b.js", accept_encoding=b"br, GZIP")
    assert zipped is not None and dict(zipped.headers)[b"content-encoding"] == b"gzip"
    assert gzip.decompress(zipped.body) == script.body
    assert dict(zipped.headers)[b"vary"] == b"accept-encoding"


def test_the_prologue_cannot_break_out_of_its_literal() -> None:
    body = _script(service_name="</script><script>alert(1)</script>&").body
    prologue = body[: -len(BUNDLE)]
    assert b"<" not in prologue and b">" not in prologue and b"&" not in prologue
    assert _config(body)["serviceName"] == "</script><script>alert(1)</script>&"


@pytest.mark.parametrize(
    ("sampler", "arg", "ratio"),
    [
        ("parentbased_always_on", 0.5, 1.0),
        ("always_on", 0.5, 1.0),
        ("always_off", 1.0, 0.0),
        ("parentbased_always_off", 1.0, 0.0),
        ("traceidratio", 0.1, 0.1),
        ("parentbased_traceidratio", 0.25, 0.25),
    ],
)
def test_sampling_follows_the_servers_sampler(sampler: str, arg: float, ratio: float) -> None:
    assert sampling_ratio(sampler, arg) == ratio


def test_from_config_is_off_without_an_endpoint_and_takes_the_servers_settings() -> None:
    attrs = {"service.name": "shop", "deployment.environment.name": "staging"}
    assert BrowserScript.from_config(load({}), attrs) is None
    env = {
        "OTEL_PERF_BROWSER_ENDPOINT": "https://otel.example.com",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "OTEL_PERF_BROWSER_PROPAGATE_ORIGINS": "https://api.example.com, http://localhost:8080",
    }
    script = BrowserScript.from_config(load(env), attrs)
    assert script is not None
    assert script.path == "/_otel_perf/browser.js"
    config = _config(script.body)
    assert config["serviceName"] == "shop-browser"
    assert config["environment"] == "staging"
    assert config["ratio"] == 0.1
    assert config["propagateOrigins"] == ["https://api.example.com", "http://localhost:8080"]
    assert script.body.endswith(load_bundle())
    named = BrowserScript.from_config(load(env | {"OTEL_PERF_BROWSER_SERVICE_NAME": "storefront"}), attrs)
    assert named is not None and _config(named.body)["serviceName"] == "storefront"


def test_page_budgets_become_histogram_bounds_of_the_browser() -> None:
    budgets = parse_budgets(
        "version: 1\npage_defaults: {lcp_ms: 2500, cls: 0.1}\n"
        "pages:\n  /checkout: {lcp_ms: 1800, inp_ms: 150}\n"
    )
    script = BrowserScript.from_config(load({"OTEL_PERF_BROWSER_ENDPOINT": "http://c:4318"}), {}, budgets)
    assert script is not None
    assert _config(script.body)["bounds"] == {"lcp": [1.8, 2.5], "cls": [0.1], "inp": [0.15]}


def test_bad_browser_settings_are_reported_and_replaced() -> None:
    config = load(
        {
            "OTEL_PERF_BROWSER_ENDPOINT": "collector:4318",
            "OTEL_PERF_BROWSER_PATH": "browser.js?v=1",
            "OTEL_PERF_BROWSER_PROPAGATE_ORIGINS": "https://ok.example.com,javascript:alert(1),https://x.com/path",
        }
    )
    problems = {p.env: p for p in config.problems}
    assert set(problems) == {
        "OTEL_PERF_BROWSER_ENDPOINT",
        "OTEL_PERF_BROWSER_PATH",
        "OTEL_PERF_BROWSER_PROPAGATE_ORIGINS",
    }
    assert config.text("OTEL_PERF_BROWSER_ENDPOINT") == ""
    assert config.text("OTEL_PERF_BROWSER_PATH") == "/_otel_perf/browser.js"
    assert config.items("OTEL_PERF_BROWSER_PROPAGATE_ORIGINS") == ("https://ok.example.com",)
    assert "javascript:alert(1)" in problems["OTEL_PERF_BROWSER_PROPAGATE_ORIGINS"].message()


def test_server_timing_hands_the_span_and_route_to_the_browser() -> None:
    ctx = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, TraceFlags(1))
    assert server_timing(ctx) == b'traceparent;desc="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"'
    assert server_timing(ctx, "/orders/{order_id}").endswith(b', route;desc="/orders/{order_id}"')
    assert server_timing(ctx, '/a"b\\c\u00e9\n').endswith(b'route;desc="/abc"')


def test_is_html() -> None:
    assert is_html([(b"content-type", b"text/html; charset=utf-8")])
    assert is_html([(b"Content-Type", b"TEXT/HTML")])
    assert not is_html([(b"content-type", b"application/json")])
    assert not is_html([(b"content-length", b"3")])


# --- the ASGI middleware hook -----------------------------------------------------------------


def _runtime(env: dict[str, str]) -> Runtime:
    provider = TracerProvider(shutdown_on_exit=False)
    registry = Registry()
    resource = Resource.create({"service.name": "shop"})
    config = load(env)
    rt = Runtime(config, provider.get_tracer("t"), registry, build_instruments(registry), resource)
    rt.browser_script = BrowserScript.from_config(config, resource.attributes, None)  # as the bootstrap does
    return rt


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = b"text/html; charset=utf-8" if scope["path"] == "/page" else b"application/json"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": b"ok"})


def _call(
    middleware: PerfMiddleware, path: str, headers: list[tuple[bytes, bytes]] | None = None
) -> list[Any]:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": headers or [], "query_string": b""}
    asyncio.run(middleware(scope, receive, send))
    return sent


def test_the_middleware_is_untouched_while_the_feature_is_off() -> None:
    middleware = PerfMiddleware(_app, _runtime({}))
    assert middleware.browser is None
    start = _call(middleware, "/page")[0]
    assert b"server-timing" not in dict(start["headers"])
    assert _call(middleware, "/_otel_perf/browser.js")[0]["status"] == 200  # the app's own answer


def test_the_middleware_serves_the_script_and_times_html_only() -> None:
    rt = _runtime({"OTEL_PERF_BROWSER_ENDPOINT": "http://127.0.0.1:4318"})
    middleware = PerfMiddleware(_app, rt)
    assert middleware.browser is rt.browser_script  # built once per runtime
    start, body = _call(middleware, "/_otel_perf/browser.js", [(b"accept-encoding", b"gzip")])
    assert start["status"] == 200 and dict(start["headers"])[b"content-encoding"] == b"gzip"
    assert gzip.decompress(body["body"]).endswith(load_bundle())
    html = dict(_call(middleware, "/page")[0]["headers"])
    assert re.fullmatch(rb'traceparent;desc="00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]"', html[b"server-timing"])
    assert b"traceresponse" in html  # what was there before stays
    assert b"server-timing" not in dict(_call(middleware, "/api")[0]["headers"])


def test_untraced_requests_get_no_server_timing() -> None:
    rt = _runtime(
        {"OTEL_PERF_BROWSER_ENDPOINT": "http://127.0.0.1:4318", "OTEL_PYTHON_EXCLUDED_URLS": "^/page"}
    )
    start = _call(PerfMiddleware(_app, rt), "/page")[0]
    assert b"server-timing" not in dict(start["headers"])  # an excluded URL has no span to hand over
