"""httpx: CLIENT spans with W3C propagation from the contrib instrumentation, plus ours.

The contrib ``HTTPXClientInstrumentor`` makes the spans and injects ``traceparent`` for
sync and async clients and the module-level ``httpx.get`` style calls (they all go through
the transports it patches).  We give it a no-op meter provider and record
``http.client.request.duration`` ourselves, in the same cheap instruments as the server
side, together with rate-limit headroom and 429 counts per ``server.address``.  Exported
URLs have sensitive query parameters redacted.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import Span

from otel_perf._analysis import ratelimit
from otel_perf._analysis.redact import redact_query
from otel_perf._core import guard
from otel_perf._core.runtime import Runtime

logger = logging.getLogger("otel_perf")
_MARK = "_otel_perf_original"
_state: dict[str, Any] = {}


class _Recorder:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.redact = frozenset(x.lower() for x in runtime.config.items("OTEL_PERF_REDACT_QUERY_PARAMS"))

    def done(self, request: Any, response: Any, seconds: float, error: BaseException | None) -> None:
        try:
            inst = self.rt.inst
            host = request.url.host or ""
            method = request.method
            status = response.status_code if response is not None else 0
            error_type = (
                type(error).__qualname__ if error is not None else (str(status) if status >= 400 else "")
            )
            inst.client_duration.record(seconds, (host, method, status, error_type))
            if response is None:
                return
            if status == 429:
                inst.throttled.add(1, (host,))
            limits = ratelimit.parse(response.headers.get)
            if limits:
                key = (host,)
                if limits.remaining is not None:
                    inst.ratelimit_remaining.set(limits.remaining, key)
                if limits.limit is not None:
                    inst.ratelimit_limit.set(limits.limit, key)
                if limits.reset_seconds is not None:
                    inst.ratelimit_reset.set(limits.reset_seconds, key)
        except Exception as exc:
            guard.internal_error("httpx.record", exc)

    def request_hook(self, span: Span, request: Any) -> None:
        try:
            if span.is_recording():
                url = request.url
                if url.query:
                    q = url.query.decode("latin-1") if isinstance(url.query, bytes) else str(url.query)
                    safe_query = redact_query(q, self.redact).encode()
                    safe = url.copy_with(query=safe_query, username=None, password=None)
                    span.set_attribute("url.full", str(safe))
        except Exception as exc:
            guard.internal_error("httpx.request_hook", exc)


def _sync_request_hook(recorder: _Recorder) -> Any:
    def hook(span: Span, request: Any) -> None:
        recorder.request_hook(span, request)

    return hook


def _async_request_hook(recorder: _Recorder) -> Any:
    async def hook(span: Span, request: Any) -> None:
        recorder.request_hook(span, request)

    return hook


def instrument(runtime: Runtime) -> None:
    from otel_perf._core.imports import when_imported

    recorder = _Recorder(runtime)

    def attach(httpx: Any) -> None:
        try:
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            HTTPXClientInstrumentor().instrument(
                tracer_provider=None,
                meter_provider=NoOpMeterProvider(),
                request_hook=_sync_request_hook(recorder),
                async_request_hook=_async_request_hook(recorder),
            )
            _state["contrib"] = True
        except Exception as exc:  # spans missing, metrics still work
            logger.warning(
                "otel-perf: httpx spans are off: the contrib httpx instrumentation failed (%s)", exc
            )
        _wrap_transports(httpx, recorder)

    when_imported("httpx", attach)


def _wrap_transports(httpx: Any, recorder: _Recorder) -> None:
    sync_cls, async_cls = httpx.HTTPTransport, httpx.AsyncHTTPTransport
    if getattr(sync_cls.handle_request, _MARK, None) is not None:
        return
    sync_orig = sync_cls.handle_request
    async_orig = async_cls.handle_async_request

    def handle_request(self: Any, request: Any) -> Any:
        start = perf_counter()
        try:
            response = sync_orig(self, request)
        except BaseException as exc:
            recorder.done(request, None, perf_counter() - start, exc)
            raise
        recorder.done(request, response, perf_counter() - start, None)
        return response

    async def handle_async_request(self: Any, request: Any) -> Any:
        start = perf_counter()
        try:
            response = await async_orig(self, request)
        except BaseException as exc:
            recorder.done(request, None, perf_counter() - start, exc)
            raise
        recorder.done(request, response, perf_counter() - start, None)
        return response

    setattr(handle_request, _MARK, sync_orig)
    setattr(handle_async_request, _MARK, async_orig)
    sync_cls.handle_request = handle_request
    async_cls.handle_async_request = handle_async_request
    _state["transports"] = (sync_cls, sync_orig, async_cls, async_orig)


def uninstrument() -> None:
    entry = _state.pop("transports", None)
    if entry is not None:
        sync_cls, sync_orig, async_cls, async_orig = entry
        sync_cls.handle_request = sync_orig
        async_cls.handle_async_request = async_orig
    if _state.pop("contrib", None):
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().uninstrument()
