"""aiohttp client: every request of every ``ClientSession`` (``aiohttp.request`` included).

Through aiohttp's public tracing hooks, as the official aiohttp-client instrumentation does:
one ``TraceConfig`` of ours is added to every ``ClientSession`` (its ``__init__`` is wrapped to
append it to the session's ``trace_configs``); ``on_request_start`` starts the call in the
outgoing-call core (:mod:`otel_perf._core.outgoing`) and puts ``traceparent`` in the
request's headers, ``on_request_end`` / ``on_request_exception`` end it.  One call covers the
redirects aiohttp follows.  A response refused by ``raise_for_status`` is recorded with its
status (a 429 counts as throttled).

The hooks leave the caller's context alone: aiohttp sends through no other instrumented
library, and a context attached in one hook could not be detached safely in another.
"""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any

from otel_perf._core import guard
from otel_perf._core.outgoing import OutgoingCalls
from otel_perf._core.patching import Patches
from otel_perf._core.runtime import Runtime

_patches = Patches("aiohttp")
_KEY = "_otel_perf_call"


def _version(response: Any) -> str:
    version = getattr(response, "version", None)
    major = getattr(version, "major", None)
    return f"{major}.{getattr(version, 'minor', 0)}" if major is not None else ""


def trace_config(aiohttp: Any, calls: OutgoingCalls) -> Any:
    """The ``TraceConfig`` every session gets."""

    async def on_request_start(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        try:
            url = params.url
            headers = params.headers
            call = calls.start(
                str(params.method),
                str(url),
                url.host or "",
                url.port,
                url.scheme,
                headers.__setitem__,
                headers.items,
                attach=False,
            )
            if call is not None:
                setattr(ctx, _KEY, call)
        except Exception as exc:
            guard.internal_error("aiohttp.start", exc)

    async def on_request_end(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        call = ctx.__dict__.pop(_KEY, None)
        if call is None:
            return
        response = params.response
        headers = response.headers
        calls.end(call, response.status, _version(response), headers.get, None, headers.items)

    async def on_request_exception(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        call = ctx.__dict__.pop(_KEY, None)
        if call is None:
            return
        error = params.exception
        status = getattr(error, "status", 0) if isinstance(error, aiohttp.ClientResponseError) else 0
        if isinstance(status, int) and status:
            headers = getattr(error, "headers", None)
            calls.end(call, status, None, headers.get if headers is not None else None)
        else:
            calls.end(call, 0, None, None, error)

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_request_start)
    config.on_request_end.append(on_request_end)
    config.on_request_exception.append(on_request_exception)
    config.freeze()
    return config


def install(runtime: Runtime, aiohttp: ModuleType) -> None:
    ours = trace_config(aiohttp, OutgoingCalls(runtime, "aiohttp_client"))
    _patches.wrap(aiohttp.ClientSession, "__init__", lambda original: _init(ours, original))


def _init(ours: Any, init: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        configs = kwargs.get("trace_configs")
        if not configs or ours not in configs:
            kwargs["trace_configs"] = [*(configs or ()), ours]
        init(self, *args, **kwargs)

    return __init__


def uninstall() -> None:
    _patches.restore()
