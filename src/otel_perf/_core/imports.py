"""Run a callback when a module is first imported (or now, if it already is).

Instrumenting lazily keeps startup cheap for apps that never import, say, httpx, and
lets us patch classes (``FastAPI.__init__``) before user code creates instances, without
importing the framework ourselves.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from otel_perf._core import guard

_callbacks: dict[str, list[Callable[[ModuleType], None]]] = {}
_lock = threading.RLock()


def when_imported(name: str, callback: Callable[[ModuleType], None]) -> None:
    """Call ``callback(module)`` once ``name`` has been imported (immediately if it has)."""
    with _lock:
        module = sys.modules.get(name)
        if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
            _callbacks.setdefault(name, []).append(callback)
            _install()
            return
    _run(name, module, callback)


def _run(name: str, module: ModuleType, callback: Callable[[ModuleType], None]) -> None:
    try:
        callback(module)
    except Exception as exc:
        guard.internal_error(f"instrumenting {name}", exc)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _callbacks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
                return spec
        return None


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        create = getattr(self.inner, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        with _lock:
            callbacks = _callbacks.pop(module.__name__, [])
        for callback in callbacks:
            _run(module.__name__, module, callback)

    def __getattr__(self, item: str) -> Any:  # resources, get_source, ... of the real loader
        return getattr(self.inner, item)


_finder = _Finder()


def _install() -> None:
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
