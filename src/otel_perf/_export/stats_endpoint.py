"""The stats endpoint and the health path: the admin performance API teams keep writing by hand.

Served by our server middleware before the app sees the request:

* ``GET <OTEL_PERF_STATS_PATH>``: the JSON summary (:func:`otel_perf._analysis.stats.summary`) of
  the whole service (every worker of the server, :mod:`otel_perf._export.stats_share`);
  ``?minutes=N`` (1-60) only the last N minutes, ``?top=N`` only the N slowest endpoints.
* ``GET <stats>/findings``: status, score, alerts and findings alone.
* ``POST <stats>/reset``: a new window, in every worker.
* ``GET <OTEL_PERF_HEALTH_PATH>``: public, no token: ``{"alive": true, "status": ..., "score": ...}``
  and nothing else (no route, no number of requests); ``?fail=degraded`` (or ``unhealthy``)
  answers 503 when the status is that bad or worse, for checks that read only the code.

The stats paths are off unless ``OTEL_PERF_STATS_TOKEN`` is set and need ``Authorization:
Bearer <token>``, compared in constant time (both sides hashed first, so not even the length
leaks); anything else is a 401 with a ``WWW-Authenticate`` header.  Answers are ``no-store``
and hold normalized SQL, routes and trace ids, never headers, parameters or literal values.

:meth:`StatsEndpoint.respond` is framework-neutral (method, path, query, headers in; status,
headers, body out); :meth:`StatsEndpoint.handle` is its ASGI face.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from otel_perf._analysis.stats import summary
from otel_perf._core import guard
from otel_perf._core.runtime import Runtime
from otel_perf._export.stats_share import MAX_MINUTES, Share

Message = MutableMapping[str, Any]
Headers = list[tuple[bytes, bytes]]
Response = tuple[int, Headers, bytes]
#: How long a health answer is reused: load balancers probe often, and each answer asks every worker.
HEALTH_CACHE_S = 1.0
#: The health path judges the service as it is now: the last five minutes, not since the start
#: (one collector outage an hour ago must not keep a load balancer's ``?fail=degraded`` at 503).
HEALTH_MINUTES = 5
_RANK = {"healthy": 0, "no_requests": 0, "degraded": 1, "unhealthy": 2}
MAX_TOP = 1000
#: What ``<stats>/findings`` answers.
FINDINGS_KEYS = ("service", "status", "status_reasons", "score", "alerts", "findings", "window_seconds",
                 "workers")


class StatsEndpoint:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        config = runtime.config
        token = config.text("OTEL_PERF_STATS_TOKEN")
        #: the stats path, "" when the stats are off (no token)
        self.path = config.text("OTEL_PERF_STATS_PATH") if token else ""
        #: the public health path, "" when off
        self.health_path = config.text("OTEL_PERF_HEALTH_PATH")
        self._digest = hashlib.sha256(token.encode()).digest()
        self.share = Share(runtime)
        self._health: tuple[float, dict[str, Any]] = (0.0, {})

    def start(self) -> None:
        """Keep this process's history, join its server's other workers (one thread, mostly idle)."""
        self.share.start()

    @property
    def paths(self) -> tuple[str, ...]:
        """Prefixes a server adapter hands to :meth:`owns` (``path.startswith(paths)``)."""
        return tuple(p for p in (self.path, self.health_path) if p)

    def owns(self, path: str) -> bool:
        """Whether ``path`` is ours to answer (the stats path, a path under it, the health path)."""
        if self.health_path and path == self.health_path:
            return True
        stats = self.path
        return bool(stats) and (path == stats or path.startswith(stats + "/"))

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

    # -- answering ---------------------------------------------------------------------------

    def respond(self, method: str, path: str, query: str, headers: Iterable[tuple[bytes, bytes]]) -> Response:
        """The answer to one request to a path :meth:`owns` (may wait up to 2 s for other workers)."""
        try:
            args = urllib.parse.parse_qs(query, max_num_fields=10)
            if self.health_path and path == self.health_path:
                return self._health_answer(method, args)
            if not self.authorized(headers):
                return _json(401, {"error": "missing or wrong bearer token"},
                             [(b"www-authenticate", b'Bearer realm="otel-perf"')])
            if path == self.path + "/reset":
                if method != "POST":
                    return _json(405, {"error": "use POST to reset"}, [(b"allow", b"POST")])
                return _json(200, {"reset": True, "workers": self.share.reset()})
            if method not in ("GET", "HEAD") or path not in (self.path, self.path + "/findings"):
                use = f"GET {self.path}, GET {self.path}/findings or POST {self.path}/reset"
                return _json(404, {"error": f"unknown stats path; use {use}"})
            minutes, top, problem = _window_args(args)
            if problem:
                return _json(400, {"error": problem})
            stats = self.stats(minutes=minutes, top=top)
            if path.endswith("/findings"):
                stats = {k: stats[k] for k in FINDINGS_KEYS if k in stats}
            return _json(200, stats)
        except Exception as exc:
            guard.internal_error("stats.respond", exc)
            reason = f"the stats could not be computed ({type(exc).__name__}); see the app log"
            return _json(500, {"error": reason})

    def stats(self, minutes: int | None = None, top: int | None = None) -> dict[str, Any]:
        """The summary of the whole service (every worker that answered), over the window asked for."""
        gathered = self.share.gather(minutes=minutes)
        window, since = gathered.window()
        out = summary(self.rt, snapshot=window, top=top, since=since)
        out["workers"] = {
            "count": len(gathered.parts),
            "pids": sorted(int(p["pid"]) for p in window.processes),
            "missing": gathered.missing,
            "scope": "server" if gathered.shared else "process",
        }
        if minutes:
            out["minutes"] = minutes
        return out

    def _health_answer(self, method: str, args: dict[str, list[str]]) -> Response:
        if method not in ("GET", "HEAD"):
            return _json(405, {"error": "use GET"}, [(b"allow", b"GET, HEAD")])
        fail = (args.get("fail") or [""])[0]
        if fail and fail not in ("degraded", "unhealthy"):
            return _json(400, {"error": "fail must be degraded or unhealthy"})
        at, body = self._health
        if time.monotonic() - at > HEALTH_CACHE_S or not body:
            stats = self.stats(minutes=HEALTH_MINUTES)
            body = {"alive": True, "status": stats["status"], "score": stats["score"]}
            self._health = (time.monotonic(), body)
        code = 503 if fail and _RANK.get(body["status"], 0) >= _RANK[fail] else 200
        return _json(code, body)

    async def handle(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        """ASGI: answer ``scope`` (asking the other workers from a thread, off the event loop)."""
        query = scope.get("query_string", b"")
        args = (
            scope.get("method", "GET"),
            scope.get("path", ""),
            query.decode("latin-1") if query else "",
            scope.get("headers") or (),
        )
        if self.share.folder is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # another event loop (trio): answer inline
                status, headers, body = self.respond(*args)
            else:
                status, headers, body = await loop.run_in_executor(None, self.respond, *args)
        else:
            status, headers, body = self.respond(*args)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _window_args(args: dict[str, list[str]]) -> tuple[int | None, int | None, str]:
    """``minutes`` and ``top`` from the query, or a message saying what is wrong."""
    values: list[int | None] = []
    for name, high in (("minutes", MAX_MINUTES), ("top", MAX_TOP)):
        raw = (args.get(name) or [""])[0]
        if not raw:
            values.append(None)
            continue
        if not raw.isdigit() or not 1 <= int(raw) <= high:
            return None, None, f"{name} must be a whole number from 1 to {high}, got {raw[:20]!r}"
        values.append(int(raw))
    return values[0], values[1], ""


def _json(status: int, body: Any, extra: Headers | None = None) -> Response:
    data = json.dumps(body, default=str).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    return status, headers, data
