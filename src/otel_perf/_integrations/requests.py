"""requests: every request a ``Session`` sends (``requests.get`` included), each redirect hop apart.

``Session.send`` is where requests hands a ``PreparedRequest`` to its transport adapter, for
the module functions, sessions and every hop of a redirect, as for the official requests
instrumentation; it is wrapped in the outgoing-call core (:mod:`otel_perf._core.outgoing`):
CLIENT span, ``traceparent`` in the prepared request's headers,
``http.client.request.duration``, rate-limit headroom and 429s.  urllib3 underneath sees HTTP
instrumentation suppressed while requests records the call, so the call is recorded once,
by the outer layer.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from otel_perf._core import guard
from otel_perf._core.outgoing import Call, OutgoingCalls
from otel_perf._core.patching import Patches
from otel_perf._core.runtime import Runtime

_patches = Patches("requests")


def _begin(calls: OutgoingCalls, request: Any) -> Call | None:
    try:
        url = str(request.url)
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:  # not a number: requests will refuse it
            port = None
        headers = request.headers
        return calls.start(
            str(request.method or "GET"),
            url,
            parts.hostname or "",
            port,
            parts.scheme,
            headers.__setitem__,
            headers.items,
            header=headers.get,
        )
    except Exception as exc:  # an unexpected request object: send it untouched
        guard.internal_error("requests.start", exc)
        return None


def _version(response: Any) -> object:
    return getattr(getattr(response, "raw", None), "version", None)


def install(runtime: Runtime, requests: ModuleType) -> None:
    calls = OutgoingCalls(runtime, "requests")
    _patches.wrap(requests.Session, "send", lambda original: _send(calls, original))


def _send(calls: OutgoingCalls, send: Any) -> Any:
    def wrapped_send(self: Any, request: Any, **kwargs: Any) -> Any:
        call = _begin(calls, request)
        if call is None:
            return send(self, request, **kwargs)
        try:
            response = send(self, request, **kwargs)
        except BaseException as exc:
            calls.end(call, 0, None, None, exc)
            raise
        headers = response.headers
        status, version = response.status_code, _version(response)
        calls.end(call, status, version, headers.get, None, headers.items, call.peer)
        return response

    return wrapped_send


def uninstall() -> None:
    _patches.restore()
