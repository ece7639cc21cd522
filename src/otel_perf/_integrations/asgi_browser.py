"""ASGI glue for the browser script: serve it, add Server-Timing to HTML responses.

:class:`otel_perf._integrations.asgi.PerfMiddleware` uses these only while
``OTEL_PERF_BROWSER_ENDPOINT`` is set (its ``browser`` attribute is None otherwise): it answers
the script's path with :func:`serve_script` before tracing (like the stats endpoint), and wraps
the app it traces in :class:`HtmlServerTimingApp`, which finds the request's span in
``current_work``.  The framework-neutral work is in :mod:`otel_perf._export.browser`; this file
only moves ASGI messages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from otel_perf._core import guard
from otel_perf._core.work import Work, current_work
from otel_perf._export.browser import BrowserScript, is_html, server_timing

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]
RouteOf = Callable[[MutableMapping[str, Any], Work], str]


async def serve_script(script: BrowserScript, scope: MutableMapping[str, Any], send: Send) -> bool:
    """Answer the request if it is for the script's path; False when it is not."""
    if_none_match = accept_encoding = b""
    for key, value in scope.get("headers") or ():
        if key == b"if-none-match":
            if_none_match = value
        elif key == b"accept-encoding":
            accept_encoding = value
    method, path = scope.get("method", "GET"), scope.get("path", "")
    response = script.respond(method, path, if_none_match, accept_encoding)
    if response is None:
        return False
    await send({"type": "http.response.start", "status": response.status, "headers": response.headers})
    await send({"type": "http.response.body", "body": response.body})
    return True


class HtmlServerTiming:
    """Wraps ``send``: an HTML response's start gets ``Server-Timing: traceparent;desc=...``."""

    __slots__ = ("route_of", "scope", "send", "work")

    def __init__(self, send: Send, work: Work, scope: MutableMapping[str, Any], route_of: RouteOf) -> None:
        self.send = send
        self.work = work
        self.scope = scope
        self.route_of = route_of

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and self.work.trace_id:
            try:
                headers = message.get("headers") or ()
                if is_html(headers):
                    value = server_timing(self.work.context, self.route_of(self.scope, self.work))
                    message["headers"] = [*headers, (b"server-timing", value)]
            except Exception as exc:
                guard.internal_error("asgi.browser", exc)
        await self.send(message)


class HtmlServerTimingApp:
    """The traced app, with :class:`HtmlServerTiming` on the ``send`` of every traced request."""

    __slots__ = ("app", "route_of")

    def __init__(self, app: ASGIApp, route_of: RouteOf) -> None:
        self.app = app
        self.route_of = route_of

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        work = current_work.get(None) if scope.get("type") == "http" else None
        if work is None or work.kind != "request":  # not traced (excluded URL, websocket)
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, HtmlServerTiming(send, work, scope, self.route_of))
