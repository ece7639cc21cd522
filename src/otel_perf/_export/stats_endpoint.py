"""The stats endpoint: the admin performance API teams keep writing by hand.

Off unless ``OTEL_PERF_STATS_TOKEN`` is set; served by our middleware at
``OTEL_PERF_STATS_PATH`` before the app sees the request.  ``GET <path>`` returns the
JSON summary (:func:`otel_perf._analysis.stats.summary`), ``POST <path>/reset`` starts a
new window.  Requests need ``Authorization: Bearer <token>``, compared in constant time
(both sides hashed first, so not even the length leaks); anything else is a 401 with a
``WWW-Authenticate`` header.  The summary holds normalized SQL, routes and trace ids,
never headers, parameters or literal values.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from otel_perf._analysis.stats import Baseline, summary
from otel_perf._core.runtime import Runtime

Message = MutableMapping[str, Any]


class StatsEndpoint:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.path = runtime.config.text("OTEL_PERF_STATS_PATH")
        self._digest = hashlib.sha256(runtime.config.text("OTEL_PERF_STATS_TOKEN").encode()).digest()
        self.baseline: Baseline | None = None

    def authorized(self, headers: Any) -> bool:
        given = b""
        for key, value in headers or ():
            if key == b"authorization":
                given = value
                break
        scheme, _, token = given.partition(b" ")
        ok_scheme = scheme.lower() == b"bearer"
        match = hmac.compare_digest(hashlib.sha256(token.strip()).digest(), self._digest)
        return ok_scheme and match

    async def handle(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if not self.authorized(scope.get("headers")):
            await _respond(
                send,
                401,
                {"error": "missing or wrong bearer token"},
                [(b"www-authenticate", b'Bearer realm="otel-perf"')],
            )
            return
        path = scope.get("path", "")
        method = scope.get("method", "GET")
        if path == self.path + "/reset":
            if method != "POST":
                await _respond(send, 405, {"error": "use POST to reset"}, [(b"allow", b"POST")])
                return
            self.baseline = Baseline.capture(self.rt)
            self.rt.findings.clear()
            await _respond(send, 200, {"reset": True})
            return
        if path != self.path or method not in ("GET", "HEAD"):
            await _respond(
                send, 404, {"error": f"unknown stats path; use GET {self.path} or POST {self.path}/reset"}
            )
            return
        await _respond(send, 200, summary(self.rt, self.baseline))


async def _respond(
    send: Callable[[Message], Awaitable[None]],
    status: int,
    body: Any,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    data = json.dumps(body, default=str).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
