"""The browser script and the ``Server-Timing`` header that joins a page load to its server trace.

On when ``OTEL_PERF_BROWSER_ENDPOINT`` is set.  Two framework-neutral pieces, which the server
middleware calls (:class:`otel_perf._integrations.asgi.PerfMiddleware`):

* :meth:`BrowserScript.respond` answers ``GET``/``HEAD`` on ``OTEL_PERF_BROWSER_PATH`` with
  the bundle built from ``_browser/`` (page loads, Web Vitals, fetch/XHR calls and errors as
  OTLP/JSON) behind a one-line configuration prologue: the collector's URLs, the browser
  service name, the environment, the sampling ratio and the extra origins that may receive
  ``traceparent``.  The configuration lives inside the served JavaScript, so pages need no
  inline script and a strict Content-Security-Policy (``script-src 'self'``) allows it.  The
  answer is built once at start-up, gzip-compressed once, and revalidated with an ETag.
* :func:`server_timing` gives the ``Server-Timing`` value for an HTML response:
  ``traceparent;desc="00-<trace-id>-<span-id>-<flags>"`` (and the route template), which the
  script reads from the navigation entry to make its page-load span a child of the server's
  SERVER span.  :func:`is_html` says which responses need it.

Nothing here runs per request while the feature is off: the middleware keeps ``None``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, NamedTuple

from opentelemetry.trace import SpanContext

from otel_perf._config import Config
from otel_perf._version import __version__

if TYPE_CHECKING:
    from otel_perf._analysis.budgets import Budgets

#: Where the built bundle lives inside the package (rebuilt by ``_browser/build.mjs``).
BUNDLE = ("_browser", "browser.js")
#: The OTLP/HTTP paths the script posts to, below OTEL_PERF_BROWSER_ENDPOINT.
TRACES_PATH = "/v1/traces"
METRICS_PATH = "/v1/metrics"
#: Browsers and proxies may keep the script this long before revalidating it (ETag).
MAX_AGE_S = 600
_MAX_ROUTE = 200

Headers = list[tuple[bytes, bytes]]


class Response(NamedTuple):
    """What to send: status, headers (lower-case names) and body."""

    status: int
    headers: Headers
    body: bytes


def load_bundle() -> bytes:
    """The built browser bundle shipped in the package."""
    return resources.files("otel_perf").joinpath(*BUNDLE).read_bytes()


def sampling_ratio(sampler: str, arg: float) -> float:
    """The share of browser-started traces to keep, from the server's sampler settings.

    The script always follows a parent's decision (the page load follows the server's); this
    is the ratio for traces the browser starts itself (fetch calls after the page loaded).
    """
    if sampler.endswith("always_off"):
        return 0.0
    if sampler.endswith("traceidratio"):
        return min(max(arg, 0.0), 1.0)
    return 1.0


def browser_service_name(config: Config, server_service_name: str) -> str:
    return config.text("OTEL_PERF_BROWSER_SERVICE_NAME") or f"{server_service_name or 'app'}-browser"


def _js_literal(value: object) -> str:
    # JSON is a JavaScript literal; escaping <, > and & keeps it inert wherever it is pasted.
    text = json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class BrowserScript:
    """The browser script's HTTP answer, built once; see the module docstring."""

    def __init__(
        self,
        *,
        endpoint: str,
        path: str,
        service_name: str,
        environment: str = "",
        ratio: float = 1.0,
        propagate_origins: Iterable[str] = (),
        bounds: Mapping[str, Sequence[float]] | None = None,
        bundle: bytes | None = None,
    ) -> None:
        base = endpoint.rstrip("/")
        self.path = path
        self.config = {
            "tracesUrl": base + TRACES_PATH,
            "metricsUrl": base + METRICS_PATH,
            "serviceName": service_name,
            "environment": environment,
            "ratio": ratio,
            "propagateOrigins": [o.rstrip("/") for o in propagate_origins],
            # page budgets (seconds; CLS score) added to the histogram bounds, so alerts are exact
            "bounds": {vital: list(values) for vital, values in (bounds or {}).items()},
            "version": __version__,
        }
        prologue = f"self.__otelPerfBrowser={_js_literal(self.config)};\n".encode()
        self.body = prologue + (load_bundle() if bundle is None else bundle)
        self.gzipped = gzip.compress(self.body, compresslevel=9, mtime=0)
        self.etag = b'"' + hashlib.sha256(self.body).hexdigest()[:32].encode() + b'"'

    @classmethod
    def from_config(
        cls, config: Config, resource_attributes: Mapping[str, object], budgets: Budgets | None = None
    ) -> BrowserScript | None:
        """The script for this process's settings, or None while OTEL_PERF_BROWSER_ENDPOINT is unset."""
        endpoint = config.text("OTEL_PERF_BROWSER_ENDPOINT")
        if not endpoint:
            return None
        environment = resource_attributes.get("deployment.environment.name") or resource_attributes.get(
            "deployment.environment", ""
        )
        return cls(
            endpoint=endpoint,
            path=config.text("OTEL_PERF_BROWSER_PATH"),
            service_name=browser_service_name(config, str(resource_attributes.get("service.name", ""))),
            environment=str(environment),
            ratio=sampling_ratio(
                config.text("OTEL_TRACES_SAMPLER"), config.number("OTEL_TRACES_SAMPLER_ARG")
            ),
            propagate_origins=config.items("OTEL_PERF_BROWSER_PROPAGATE_ORIGINS"),
            bounds=budgets.page_bounds() if budgets is not None else None,
        )

    def respond(
        self, method: str, path: str, if_none_match: bytes = b"", accept_encoding: bytes = b""
    ) -> Response | None:
        """The answer for a request to ``path``, or None when the path is not the script's."""
        if path != self.path:
            return None
        if method not in ("GET", "HEAD"):
            return Response(405, [(b"allow", b"GET, HEAD"), (b"content-length", b"0")], b"")
        headers: Headers = [
            (b"etag", self.etag),
            (b"cache-control", b"public, max-age=%d" % MAX_AGE_S),
            (b"vary", b"accept-encoding"),
        ]
        if self.etag in _etags(if_none_match):
            return Response(304, headers, b"")
        body = self.body
        if b"gzip" in accept_encoding.lower():
            body = self.gzipped
            headers.append((b"content-encoding", b"gzip"))
        headers += [
            (b"content-type", b"text/javascript; charset=utf-8"),
            (b"x-content-type-options", b"nosniff"),
            (b"content-length", str(len(body)).encode()),
        ]
        return Response(200, headers, b"" if method == "HEAD" else body)


def _etags(header: bytes) -> list[bytes]:
    return [tag.strip().removeprefix(b"W/") for tag in header.split(b",")]


def is_html(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """True when the response headers declare an HTML body (``text/html``)."""
    for key, value in headers:
        if key.lower() == b"content-type":
            return value[:9].lower() == b"text/html"
    return False


def server_timing(span_context: SpanContext, route: str = "") -> bytes:
    """The ``Server-Timing`` value that hands the request's span (and route) to the browser.

    ``traceparent;desc="00-<trace-id>-<span-id>-<flags>"``, then ``route;desc="<template>"``
    when the route is known: the script names its page loads by the server's route template.
    """
    value = b'traceparent;desc="00-%032x-%016x-%02x"' % (
        span_context.trace_id,
        span_context.span_id,
        span_context.trace_flags,
    )
    if route:
        safe = "".join(c for c in route[:_MAX_ROUTE] if c.isascii() and c.isprintable() and c not in '"\\')
        value += b', route;desc="' + safe.encode("ascii") + b'"'
    return value
