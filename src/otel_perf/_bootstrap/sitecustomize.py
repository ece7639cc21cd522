"""Runs at interpreter start in every process the launcher starts (it is on PYTHONPATH).

This folder holds nothing else, so no module of ours can shadow one of the user's.  After
bootstrapping it hands over to any ``sitecustomize`` the user's environment had, which
ours would otherwise hide.
"""

import importlib.util
import os
import sys


def _bootstrap() -> bool:
    """Set telemetry up; whether it is on."""
    try:
        from otel_perf._config import ConfigError
        from otel_perf._setup.install import bootstrap
    except ImportError as exc:  # the package is not importable from this interpreter
        sys.stderr.write(f"otel-perf: instrumentation unavailable in {sys.executable}: {exc}\n")
        return False
    try:
        return bootstrap() is not None
    except ConfigError as exc:
        sys.stderr.write(f"otel-perf: refusing to start (OTEL_PERF_STRICT=true): {exc}\n")
        raise SystemExit(2) from None
    except Exception as exc:
        if _strict():  # strict means "as configured or not at all", whatever failed
            sys.stderr.write(f"otel-perf: refusing to start (OTEL_PERF_STRICT=true): {_describe(exc)}\n")
            raise SystemExit(2) from None
        if os.environ.get("OTEL_PERF__RAISE_ERRORS") == "1":
            raise
        sys.stderr.write(f"otel-perf: telemetry disabled, bootstrap failed: {_describe(exc)}\n")
        return False


def _strict() -> bool:
    return os.environ.get("OTEL_PERF_STRICT", "").strip().lower() in {"true", "1", "yes", "on"}


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ == "BudgetError" and "OTEL_PERF_BUDGETS" not in text:
        text = f"OTEL_PERF_BUDGETS={os.environ.get('OTEL_PERF_BUDGETS', '')!r}: {text}"
    return text


def _chain_user_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    ours = sys.modules.pop("sitecustomize", None)
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        spec = importlib.util.find_spec("sitecustomize")
        if spec is not None and spec.loader is not None and spec.origin != __file__:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
    except Exception as exc:
        sys.stderr.write(f"otel-perf: the environment's own sitecustomize failed: {exc}\n")
    finally:
        sys.path[:] = saved
        if ours is not None:
            sys.modules["sitecustomize"] = ours


def _freeze_startup_heap() -> None:
    try:
        from otel_perf._setup.heap import freeze_startup_heap

        freeze_startup_heap()
    except Exception as exc:
        if os.environ.get("OTEL_PERF__RAISE_ERRORS") == "1":
            raise
        sys.stderr.write(f"otel-perf: could not freeze the start-up heap: {_describe(exc)}\n")


_active = _bootstrap()
_chain_user_sitecustomize()
if _active:
    _freeze_startup_heap()
