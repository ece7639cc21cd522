"""uvicorn: its error log in the app's logging, nothing lost when it stops, no report from its supervisors.

* ``Config.configure_logging``: uvicorn's ``uvicorn`` logger does not propagate and writes
  text with a handler of its own, so "Exception in ASGI application" with its traceback
  reached neither OTLP nor the JSON lines.  Its default handler gives way to ours
  (:func:`otel_perf._integrations.logs.adopt`).
* ``Server.capture_signals``: current uvicorn catches SIGTERM, shuts down gracefully, then
  restores the handler that was there before (the default, under gunicorn's uvicorn worker
  class) and raises the signal again, so the process dies without ``atexit``: each worker's
  last span batch and every metric point since the last export were lost.  Telemetry is now
  flushed (and the exit report printed) when the server has stopped, before the signal is
  raised again.  A uvicorn without it exits normally and ``atexit`` does the same.
* ``Multiprocess.run`` / ``BaseReload.run``: these processes only supervise workers; they
  print no exit report.
* ``Config.load``: the app uvicorn loaded, when it is of no framework with an adapter of ours
  (FastAPI/Starlette and Django measure themselves), is measured generically, by method
  (:func:`otel_perf._integrations.apps.generic_asgi`; ``--interface wsgi`` apps through the
  ``wsgi`` row), inside uvicorn's own middleware (proxy headers applied first).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from otel_perf._core import guard
from otel_perf._core.patching import Patches
from otel_perf._core.runtime import Runtime
from otel_perf._core.server import server_stopped, supervising

_patches = Patches("uvicorn")


def install(runtime: Runtime, module: Any) -> None:
    name = module.__name__
    if name == "uvicorn.config":
        _patches.wrap(module.Config, "configure_logging", _configure_logging)
        _patches.wrap(module.Config, "load", lambda original: _load(runtime, original))
    elif name == "uvicorn.server" and hasattr(module.Server, "capture_signals"):
        _patches.wrap(module.Server, "capture_signals", lambda original: _capture_signals(runtime, original))
    elif name == "uvicorn.supervisors.multiprocess":
        _patches.wrap(module.Multiprocess, "run", lambda original: supervising(runtime, original))
    elif name == "uvicorn.supervisors.basereload":
        # A reloader runs one worker at a time: its stats need no sharing.
        _patches.wrap(
            module.BaseReload, "run", lambda original: supervising(runtime, original, workers=False)
        )


def _is_uvicorn_default(handler: Any) -> bool:
    formatter = type(handler.formatter).__module__ if handler.formatter is not None else ""
    return type(handler).__name__ == "StreamHandler" and formatter == "uvicorn.logging"


def _configure_logging(original: Any) -> Any:
    def configure_logging(self: Any) -> None:
        original(self)
        try:
            from otel_perf._integrations import logs

            logs.adopt("uvicorn", _is_uvicorn_default)
        except Exception as exc:
            guard.internal_error("uvicorn.logging", exc)

    return configure_logging


def _load(runtime: Runtime, original: Any) -> Any:
    def load(self: Any) -> None:
        original(self)
        try:
            _measure_loaded_app(runtime, self)
        except Exception as exc:
            guard.internal_error("uvicorn.load", exc)

    return load


def _is_uvicorn_middleware(app: Any) -> bool:
    module = type(app).__module__
    return module.startswith(("uvicorn.middleware.", "a2wsgi.")) and "app" in getattr(app, "__dict__", {})


def _measure_loaded_app(runtime: Runtime, config: Any) -> None:
    """Wrap the user's app inside uvicorn's middleware chain, unless a framework adapter measures it."""
    from otel_perf._integrations import apps, wsgi

    holder, attribute = config, "loaded_app"
    app = config.loaded_app
    for _ in range(8):
        if not _is_uvicorn_middleware(app):
            break
        if "WSGI" in type(app).__name__:  # --interface wsgi: the WSGI app runs in a thread
            inner = app.app
            wrapped = wsgi.wrap_generic(inner, "uvicorn")
            if wrapped is not inner:
                app.app = wrapped
            return
        holder, attribute, app = app, "app", app.app
    wrapped = apps.generic_asgi(app, runtime, "uvicorn")
    if wrapped is not app:
        setattr(holder, attribute, wrapped)


def _capture_signals(runtime: Runtime, original: Any) -> Any:
    @contextlib.contextmanager
    def capture_signals(self: Any) -> Iterator[None]:
        with original(self):
            try:
                yield
            finally:
                if not getattr(self, "started", True):
                    runtime.note("the server stopped before it served (did the app fail to load? see above)")
                server_stopped(runtime)

    return capture_signals


def uninstall() -> None:
    _patches.restore()
