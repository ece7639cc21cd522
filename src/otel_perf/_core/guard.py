"""Never break the host app: one guard for every hook, listener and callback we run.

A fault inside our code is logged once per place (with the traceback) and swallowed, so a
telemetry bug cannot fail a request.  Under our own tests (``OTEL_PERF__RAISE_ERRORS=1``)
it is re-raised instead, so bugs are not hidden.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

logger = logging.getLogger("otel_perf")
_P = ParamSpec("_P")
_R = TypeVar("_R")
_reported: set[str] = set()
RAISE_ENV = "OTEL_PERF__RAISE_ERRORS"


def raising() -> bool:
    return os.environ.get(RAISE_ENV, "") == "1"


def internal_error(where: str, exc: BaseException) -> None:
    """Report a fault in our own code: once per ``where``; re-raise under tests."""
    if raising():
        raise exc
    if where in _reported or len(_reported) > 1000:
        return
    _reported.add(where)
    logger.warning(
        "otel-perf: internal error in %s (telemetry for it may be incomplete; the app is unaffected). "
        "Please report this with the traceback.",
        where,
        exc_info=exc,
    )


def guarded(where: str, default: _R) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorator form of :func:`internal_error` for callbacks that return a value."""

    def wrap(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def inner(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                internal_error(where, exc)
                return default

        return inner

    return wrap
