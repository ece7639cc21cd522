"""httpx: every request a sync or async client sends over its network transport.

``HTTPTransport.handle_request`` and ``AsyncHTTPTransport.handle_async_request`` are where
every httpx request meets the network (``httpx.get``, ``Client``, ``AsyncClient``; each
redirect hop separately), as for the official httpx instrumentation; each is wrapped in the
outgoing-call core (:mod:`otel_perf._core.outgoing`): CLIENT span, ``traceparent``,
``http.client.request.duration``, rate-limit headroom and 429s.  Transports of your own
(``MockTransport``, ``ASGITransport``) are not network calls and are left alone.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from otel_perf._core import guard
from otel_perf._core.outgoing import Call, OutgoingCalls
from otel_perf._core.patching import Patches
from otel_perf._core.runtime import Runtime

_patches = Patches("httpx")


def _begin(calls: OutgoingCalls, request: Any) -> Call | None:
    try:
        url = request.url
        headers = request.headers
        return calls.start(
            request.method,
            str(url),
            url.host or "",
            url.port,
            url.scheme,
            headers.__setitem__,
            headers.multi_items,
        )
    except Exception as exc:  # an unexpected request object: send it untouched
        guard.internal_error("httpx.start", exc)
        return None


def _version(response: Any) -> object:
    return response.extensions.get("http_version") if response is not None else None


def _peer(response: Any) -> Any:
    """The connected server's (address, port), as httpcore's network stream reports it."""
    stream = response.extensions.get("network_stream")
    return stream.get_extra_info("server_addr") if stream is not None else None


def install(runtime: Runtime, httpx: ModuleType) -> None:
    calls = OutgoingCalls(runtime, "httpx")
    _patches.wrap(httpx.HTTPTransport, "handle_request", lambda original: _sync(calls, original))
    _patches.wrap(httpx.AsyncHTTPTransport, "handle_async_request", lambda original: _async(calls, original))


def _sync(calls: OutgoingCalls, sync_send: Any) -> Any:
    def handle_request(self: Any, request: Any) -> Any:
        call = _begin(calls, request)
        if call is None:
            return sync_send(self, request)
        try:
            response = sync_send(self, request)
        except BaseException as exc:
            calls.end(call, 0, None, None, exc)
            raise
        headers = response.headers
        calls.end(
            call,
            response.status_code,
            _version(response),
            headers.get,
            None,
            headers.multi_items,
            lambda: _peer(response),
        )
        return response

    return handle_request


def _async(calls: OutgoingCalls, async_send: Any) -> Any:
    async def handle_async_request(self: Any, request: Any) -> Any:
        call = _begin(calls, request)
        if call is None:
            return await async_send(self, request)
        try:
            response = await async_send(self, request)
        except BaseException as exc:
            calls.end(call, 0, None, None, exc)
            raise
        headers = response.headers
        calls.end(
            call,
            response.status_code,
            _version(response),
            headers.get,
            None,
            headers.multi_items,
            lambda: _peer(response),
        )
        return response

    return handle_async_request


def uninstall() -> None:
    _patches.restore()
