"""Process metrics (CPU, memory, threads, open files, GC) from the official system-metrics instrumentation.

We configure it with the process metrics a performance dashboard needs and nothing
host-wide (the collector's host metrics receiver is the place for those).
"""

from __future__ import annotations

from typing import Any

from otel_perf import _names as n

_state: dict[str, Any] = {}


def install(runtime: Any, _module: Any = None) -> None:
    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

    instrumentor = SystemMetricsInstrumentor(
        config={
            n.PROCESS_CPU_TIME: ["user", "system"],
            n.PROCESS_CPU_UTILIZATION: None,
            n.PROCESS_MEMORY: None,
            "process.memory.virtual": None,
            n.PROCESS_THREADS: None,
            n.GC_COLLECTIONS: None,
            "process.open_file_descriptor.count": None,
        }
    )
    instrumentor.instrument()
    _state["instrumentor"] = instrumentor


def uninstall() -> None:
    instrumentor = _state.pop("instrumentor", None)
    if instrumentor is not None:
        instrumentor.uninstrument()
