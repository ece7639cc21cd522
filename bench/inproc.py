"""Driving ``app.py`` in this process: one request through its ASGI stack, and an OTLP sink.

Shared by the microbenchmarks (``test_hotpath.py``) and the bytecode counter
(``bytecodes.py``): no server, no socket, the same request every time.
"""

from __future__ import annotations

import threading
from typing import Any


def scope(path: str) -> dict[str, Any]:
    """The HTTP scope uvicorn would build for ``GET path`` from wrk."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk/4.1"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def call(asgi: Any, path: str) -> None:
    """One ``GET path`` through ``asgi``; raises unless it answers 200."""
    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await asgi(scope(path), _receive, send)
    if status != [200]:
        raise RuntimeError(f"GET {path} answered {status}, expected [200]")


def start_sink() -> str:
    """``sink.py`` serving on a free loopback port in a daemon thread; its base URL."""
    import sink  # beside this file, on sys.path as this module is

    server = sink.serve(0)
    threading.Thread(target=server.serve_forever, name="bench-sink", daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"
