"""gunicorn: its error log in the app's logging; its arbiter prints no exit report.

``gunicorn.error`` does not propagate and writes with a text handler of its own, so
"Error handling request" with its traceback reached neither OTLP nor the JSON lines; after
``Logger.setup`` its default stderr handler gives way to ours (an error log file or a
logging config of your own is kept, and gets the OTLP handler).  The arbiter only
supervises workers: no exit report there (workers forked from it are workers again).
Workers of the sync and gthread classes exit through ``sys.exit``, so ``atexit`` flushes
their telemetry; uvicorn's worker class is covered by the uvicorn adapter.

``Worker.load_wsgi``: the app a worker of gunicorn's own WSGI classes (sync, gthread, gevent,
eventlet) loaded is measured generically when it is of no framework with an adapter of ours
(:func:`otel_perf._integrations.wsgi.wrap_generic`; Django and Flask measure themselves);
gunicorn's ASGI worker (``-k asgi``) gets the generic ASGI measurement.  Worker classes of
other packages (uvicorn's, aiohttp's) are left to their own adapters or alone: their "app"
is not a WSGI callable.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from otel_perf._core import guard
from otel_perf._core.patching import Patches
from otel_perf._core.runtime import Runtime
from otel_perf._core.server import supervising

_patches = Patches("gunicorn")


def install(runtime: Runtime, module: Any) -> None:
    if module.__name__ == "gunicorn.glogging":
        _patches.wrap(module.Logger, "setup", _setup)
    elif module.__name__ == "gunicorn.arbiter":
        _patches.wrap(module.Arbiter, "run", lambda original: supervising(runtime, original))
    elif module.__name__ == "gunicorn.workers.base":
        _patches.wrap(module.Worker, "load_wsgi", _load_wsgi)
    elif module.__name__ == "gunicorn.workers.gasgi" and hasattr(module, "ASGIWorker"):
        _patches.wrap(module.ASGIWorker, "load_wsgi", lambda original: _load_asgi(runtime, original))


#: gunicorn's own worker classes that call a WSGI app (by the module of a class in their MRO).
_WSGI_WORKER_MODULES = ("gunicorn.workers.sync", "gunicorn.workers.gthread", "gunicorn.workers.base_async")


def _serves_wsgi(worker: Any) -> bool:
    return any(cls.__module__ in _WSGI_WORKER_MODULES for cls in type(worker).__mro__)


def _load_wsgi(original: Any) -> Any:
    def load_wsgi(self: Any) -> None:
        original(self)
        try:
            if _serves_wsgi(self):
                from otel_perf._integrations import wsgi

                self.wsgi = wsgi.wrap_generic(self.wsgi, "gunicorn")
        except Exception as exc:
            guard.internal_error("gunicorn.load_wsgi", exc)

    return load_wsgi


def _load_asgi(runtime: Runtime, original: Any) -> Any:
    def load_wsgi(self: Any) -> None:
        original(self)
        try:
            from otel_perf._integrations import apps

            self.asgi = apps.generic_asgi(self.asgi, runtime, "gunicorn")
        except Exception as exc:
            guard.internal_error("gunicorn.load_asgi", exc)

    return load_wsgi


def _is_gunicorn_default(handler: Any) -> bool:
    return (
        type(handler) is logging.StreamHandler
        and getattr(handler, "_gunicorn", False)
        and handler.stream in (sys.stderr, sys.__stderr__)
    )


def _setup(original: Any) -> Any:
    def setup(self: Any, cfg: Any) -> None:
        original(self, cfg)
        try:
            from otel_perf._integrations import logs

            logs.adopt("gunicorn.error", _is_gunicorn_default)
        except Exception as exc:
            guard.internal_error("gunicorn.logging", exc)

    return setup


def uninstall() -> None:
    _patches.restore()
