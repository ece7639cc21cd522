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

    def answer(self, method: str, path: str, headers: Any) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        """(status, JSON body, extra headers) for a request to the endpoint, whatever the server."""
        if not self.authorized(headers):
            challenge = [(b"www-authenticate", b'Bearer realm="otel-perf"')]
            return 401, {"error": "missing or wrong bearer token"}, challenge
        if path == self.path + "/reset":
            if method != "POST":
                return 405, {"error": "use POST to reset"}, [(b"allow", b"POST")]
            self.baseline = Baseline.capture(self.rt)
            self.rt.findings.clear()
            return 200, {"reset": True}, []
        if path != self.path or method not in ("GET", "HEAD"):
            return 404, {"error": f"unknown stats path; use GET {self.path} or POST {self.path}/reset"}, []
        return 200, summary(self.rt, self.baseline), []

    def response(self, method: str, path: str, headers: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """(status, headers, body bytes): :meth:`answer` serialized (the WSGI adapter sends this)."""
        status, body, extra = self.answer(method, path, headers)
        data = json.dumps(body, default=str).encode()
        return (
            status,
            [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"cache-control", b"no-store"),
                *extra,
            ],
            data,
        )

    async def handle(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        status, headers, data = self.response(
            scope.get("method", "GET"), scope.get("path", ""), scope.get("headers")
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
