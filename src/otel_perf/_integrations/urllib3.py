"""urllib3: every request a connection pool sends (``PoolManager``, ``urllib3.request``, pools of your own).

``HTTPConnectionPool.urlopen`` is where every urllib3 request meets a connection, as for the
official urllib3 instrumentation; it is wrapped in the outgoing-call core
(:mod:`otel_perf._core.outgoing`).  Retries and redirects a pool follows itself run inside the
first call and belong to its one span; a ``PoolManager`` redirect to another host is a call
of its own.  Under requests (or another instrumented client on top), HTTP instrumentation is
suppressed and the outer layer records the call: this wrapper then only passes it on.

The ``traceparent`` goes into a copy of the request's headers (the caller's mapping is left
as it was); without headers, into a copy of the pool's default headers, which is what urllib3
would have sent.
"""

from __future__ import annotations

import io
from collections.abc import Sized
from types import ModuleType
from typing import Any

from otel_perf._core import guard
from otel_perf._core.outgoing import Call, OutgoingCalls
from otel_perf._core.patching import Patches
from otel_perf._core.runtime import Runtime
from otel_perf._core.suppression import is_http_instrumentation_enabled

_patches = Patches("urllib3")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _full_url(pool: Any, url: str) -> str:
    if url.startswith(("http://", "https://")):  # through a proxy: the absolute URL
        return url
    scheme = pool.scheme or "http"
    host = pool.host or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = pool.port
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return f"{scheme}://{netloc}{url if url.startswith('/') else '/' + url}"


def _copy(headers: Any) -> Any:
    copy = getattr(headers, "copy", None)
    return copy() if copy is not None else dict(headers)


def install(runtime: Runtime, urllib3: ModuleType) -> None:
    calls = OutgoingCalls(runtime, "urllib3")
    _patches.wrap(urllib3.HTTPConnectionPool, "urlopen", lambda original: _urlopen(calls, original))


def _urlopen(calls: OutgoingCalls, urlopen: Any) -> Any:
    def wrapped_urlopen(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if not is_http_instrumentation_enabled():  # an outer layer records it (or an exporter sends)
            return urlopen(self, method, url, *args, **kwargs)
        call: Call | None = None
        try:
            positional = len(args) >= 2  # (body, headers, ...)
            given = args[1] if positional else kwargs.get("headers")
            headers = _copy(self.headers if given is None else given)
            if positional:
                args = (args[0], headers, *args[2:])
            else:
                kwargs["headers"] = headers
            call = calls.start(
                str(method),
                _full_url(self, str(url)),
                self.host or "",
                self.port,
                self.scheme or "http",
                headers.__setitem__,
                headers.items,
            )
        except Exception as exc:  # an unexpected pool or headers object: send it untouched
            guard.internal_error("urllib3.start", exc)
        if call is None:
            return urlopen(self, method, url, *args, **kwargs)
        try:
            response = urlopen(self, method, url, *args, **kwargs)
        except BaseException as exc:
            calls.end(call, 0, None, None, exc)
            raise
        response_headers = response.headers
        calls.end(
            call,
            response.status,
            getattr(response, "version", None),
            response_headers.get,
            None,
            response_headers.items,
            None,
            _sizes(args[0] if args else kwargs.get("body"), response_headers),
        )
        return response

    return wrapped_urlopen


def _sizes(body: Any, headers: Any) -> tuple[int | None, int] | None:
    """The request body's size (0 without one, None when it cannot be told: a generator, a file)
    and the response's ``Content-Length`` (0 when it has none), as the official urllib3
    instrumentation reads them."""
    try:
        if body is None:
            request_size: int | None = 0
        elif isinstance(body, Sized):
            request_size = len(body)
        elif isinstance(body, io.BytesIO):
            request_size = body.getbuffer().nbytes
        else:
            request_size = None
        length = str(headers.get("Content-Length") or "0").strip()
        return request_size, int(length) if length.isdigit() else 0
    except Exception:  # an odd body or headers object: no sizes
        return None


def uninstall() -> None:
    _patches.restore()
