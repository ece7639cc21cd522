"""Driving the benchmark apps in this process: the bootstrap, one request through their stack, a sink.

Shared by the microbenchmarks (``test_hotpath.py``), the bytecode counter (``bytecodes.py``)
and the instruction counter (``instructions.py``): no server, no socket, the same request
every time.
"""

from __future__ import annotations

import os
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


def environ(path: str) -> dict[str, Any]:
    """The WSGI environ gunicorn would build for ``GET path`` from wrk."""
    import io
    import sys

    route, _, query = path.partition("?")
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": route,
        "QUERY_STRING": query,
        "RAW_URI": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "wrk/4.1",
        "HTTP_ACCEPT": "*/*",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def wsgi_call(app: Any, path: str) -> None:
    """One ``GET path`` through the WSGI ``app`` as a server runs it (iterate, close); raises unless 200."""
    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status.append(line)
        return None

    body = app(environ(path), start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    if not status or not status[0].startswith("200"):
        raise RuntimeError(f"GET {path} answered {status}, expected 200")


def start_sink() -> str:
    """``sink.py`` serving on a free loopback port in a daemon thread; its base URL."""
    import sink  # beside this file, on sys.path as this module is

    server = sink.serve(0)
    threading.Thread(target=server.serve_forever, name="bench-sink", daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def bootstrap_ours(mode: str) -> None:
    """Bootstrap otel_perf as the launcher does, README production settings; ``mode`` is ``ours``
    (no request sampled) or ``ours-100`` (every request sampled).  What the environment already
    sets wins (``--set``, or the sink the caller started); a sink is started here otherwise.
    """
    defaults = {
        "OTEL_SERVICE_NAME": "inproc",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.0" if mode == "ours-100" else "0",
        "OTEL_PERF_LOG_FORMAT": "off",
        # Per second, not per request: it would charge a request slowed by a tracer or an
        # emulator many times its share (bytecodes.py's docstring).
        "OTEL_PERF_LOOP_MONITOR": "false",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    if "OTEL_EXPORTER_OTLP_ENDPOINT" not in os.environ:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = start_sink()
    from otel_perf._setup.install import bootstrap

    if bootstrap() is None:
        raise RuntimeError("otel_perf did not bootstrap (is OTEL_SDK_DISABLED set?)")


def load_app(name: str) -> tuple[Any, bool]:
    """The benchmark app ``name`` (imported after the bootstrap, as under the launcher); is it ASGI?"""
    if name == "django":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djbench.settings")
        import djbench.wsgi

        return djbench.wsgi.application, False
    if name == "flask":
        import flask_bench

        return flask_bench.app, False
    import app as bench_app

    return bench_app.app, True
