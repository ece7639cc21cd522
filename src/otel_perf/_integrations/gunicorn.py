"""gunicorn: its error log in the app's logging; its arbiter prints no exit report.

``gunicorn.error`` does not propagate and writes with a text handler of its own, so
"Error handling request" with its traceback reached neither OTLP nor the JSON lines; after
``Logger.setup`` its default stderr handler gives way to ours (an error log file or a
logging config of your own is kept, and gets the OTLP handler).  The arbiter only
supervises workers: no exit report there (workers forked from it are workers again).
Workers of the sync and gthread classes exit through ``sys.exit``, so ``atexit`` flushes
their telemetry; uvicorn's worker class is covered by the uvicorn adapter.
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
