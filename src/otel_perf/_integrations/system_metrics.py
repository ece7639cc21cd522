"""Process metrics (CPU, memory, threads, open files, GC), as the official instrumentation reports them.

We export the process metrics a performance dashboard needs and nothing host-wide (the
collector's host metrics receiver is the place for those).  They are read here rather than
through ``opentelemetry.instrumentation.system_metrics``: its ``BaseInstrumentor`` brings
``packaging``, ``wrapt`` and a dozen semantic-convention modules for seven callbacks on ``psutil``
(which the SDK's resource detection imports anyway).  Left out, with the official log handler's
package (``_setup/providers.py``), they are 1.6 MB of RSS in a process that loads no official
instrumentation.
The seven metrics come from the same ``psutil`` and ``gc`` calls, under the same names, units,
descriptions, attributes, instrumentation scope and schema URL;
``tests/test_system_metrics.py`` runs the official instrumentor beside them and compares
every point.  The differences, all on purpose:

* after a fork (a gunicorn worker) the points are the child's: the official instrumentor keeps
  the ``psutil.Process`` of the process that built it;
* ``OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS`` (comma-separated fnmatch patterns) is honoured;
  the official instrumentor honours it only when built without a configuration;
* uninstalling stops the observations (the official instrumentor's keep going), and on PyPy
  ``cpython.gc.collections`` is left out without its warning;
* the scope's version is the installed distribution's (the official one: its ``__version__``,
  the same string).
"""

from __future__ import annotations

import fnmatch
import gc
import os
import platform
import sys
from collections.abc import Callable, Iterable
from typing import Any

import psutil
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter

from otel_perf import _names as n
from otel_perf._integrations import DidNotEnable

#: the scope the official instrumentation reports under: the same series, whichever reads them
SCOPE = "opentelemetry.instrumentation.system_metrics"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.11.0"
EXCLUDED_ENV = "OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS"
#: what we export, in the official instrumentor's configuration format (metric -> its states)
CONFIG: dict[str, list[str] | None] = {
    n.PROCESS_CPU_TIME: ["user", "system"],
    n.PROCESS_CPU_UTILIZATION: None,
    n.PROCESS_MEMORY: None,
    "process.memory.virtual": None,
    "process.open_file_descriptor.count": None,
    n.PROCESS_THREADS: None,
    n.GC_COLLECTIONS: None,
}

_state: dict[str, Any] = {}


def _scope_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("opentelemetry-instrumentation-system-metrics")
    except metadata.PackageNotFoundError:
        return ""


#: metric -> (instrument, description, unit), as the official instrumentation creates each one
#: (``process.cpu.utilization``'s from the semantic conventions' ``create_process_cpu_utilization``)
INSTRUMENTS: dict[str, tuple[str, str, str]] = {
    n.PROCESS_CPU_TIME: ("counter", "Total CPU seconds broken down by different states.", "s"),
    n.PROCESS_CPU_UTILIZATION: (
        "gauge",
        "Difference in process.cpu.time since the last measurement, divided by the elapsed time and "
        "number of CPUs available to the process.",
        "1",
    ),
    n.PROCESS_MEMORY: ("up_down_counter", "The amount of physical memory in use.", "By"),
    "process.memory.virtual": ("up_down_counter", "The amount of committed virtual memory.", "By"),
    "process.open_file_descriptor.count": (
        "up_down_counter",
        "Number of file descriptors in use by the process.",
        "",
    ),
    n.PROCESS_THREADS: ("up_down_counter", "Process threads count.", ""),
    n.GC_COLLECTIONS: (
        "counter",
        "The number of times a generation was collected since interpreter start.",
        "{collection}",
    ),
}
#: what this platform cannot report (the official instrumentation leaves these out too)
UNAVAILABLE = frozenset(
    (["process.open_file_descriptor.count"] if sys.platform == "win32" else [])
    + ([n.GC_COLLECTIONS] if platform.python_implementation() == "PyPy" else [])
)


class ProcessMetrics:
    """The observable instruments and their callbacks (``active`` False: they observe nothing)."""

    def __init__(self, metrics: Iterable[str]) -> None:
        self.metrics = frozenset(metrics) - UNAVAILABLE
        self.active = True
        self._pid = 0
        self._process: Any = None

    def process(self) -> Any:
        """This process's ``psutil.Process``, made again after a fork (psutil is imported at install)."""
        pid = os.getpid()
        if pid != self._pid:
            self._process, self._pid = psutil.Process(pid), pid
        return self._process

    def register(self, meter_provider: MeterProvider | None = None) -> None:
        meter = get_meter(SCOPE, _scope_version(), meter_provider, schema_url=SCHEMA_URL)
        create = {
            "counter": meter.create_observable_counter,
            "gauge": meter.create_observable_gauge,
            "up_down_counter": meter.create_observable_up_down_counter,
        }
        readers = {
            n.PROCESS_CPU_TIME: self._cpu_time,
            n.PROCESS_CPU_UTILIZATION: self._cpu_utilization,
            n.PROCESS_MEMORY: self._memory_usage,
            "process.memory.virtual": self._memory_virtual,
            "process.open_file_descriptor.count": self._open_file_descriptors,
            n.PROCESS_THREADS: self._thread_count,
            n.GC_COLLECTIONS: self._gc_collections,
        }
        for name in CONFIG:  # the official instrumentor's order
            if name in self.metrics:
                kind, description, unit = INSTRUMENTS[name]
                callback = self._while_active(readers[name])
                create[kind](name=name, callbacks=[callback], description=description, unit=unit)

    def _while_active(self, read: Callable[[CallbackOptions], list[Observation]]) -> Callable[..., Any]:
        def callback(options: CallbackOptions) -> list[Observation]:
            return read(options) if self.active else []

        return callback

    # --- readers (the official instrumentor's callbacks, point for point) ---------------
    def _cpu_time(self, options: CallbackOptions) -> list[Observation]:
        times = self.process().cpu_times()
        states = CONFIG[n.PROCESS_CPU_TIME] or ()
        return [Observation(getattr(times, s), {"type": s}) for s in states if hasattr(times, s)]

    def _cpu_utilization(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self.process().cpu_percent() / 100 / (psutil.cpu_count() or 1), {})]

    def _memory_usage(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self.process().memory_info().rss, {})]

    def _memory_virtual(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self.process().memory_info().vms, {})]

    def _open_file_descriptors(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self.process().num_fds(), {})]

    def _thread_count(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self.process().num_threads(), {})]

    def _gc_collections(self, options: CallbackOptions) -> list[Observation]:
        # "generation" as well: the official instrumentation still sends the old name
        return [
            Observation(stat["collections"], {"cpython.gc.generation": index, "generation": str(index)})
            for index, stat in enumerate(gc.get_stats())
        ]


def wanted(excluded: str) -> list[str]:
    """Our metrics minus those ``excluded`` (``OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS``) matches."""
    patterns = [p.strip() for p in excluded.split(",") if p.strip()]
    return [m for m in CONFIG if not any(fnmatch.fnmatch(m, p) for p in patterns)]


def install(runtime: Any, _module: Any = None) -> None:
    metrics = _state.get("metrics")
    if metrics is not None:  # installed before, then uninstalled: its instruments are still registered
        metrics.active = True
        return
    excluded = ",".join(runtime.config.items(EXCLUDED_ENV)) if runtime is not None else ""
    metrics = ProcessMetrics(wanted(excluded))
    try:
        metrics.process()  # here, not in the metric reader's thread at its first export
    except Exception as exc:  # psutil cannot read this process (a restricted /proc)
        raise DidNotEnable(f"psutil cannot read this process ({exc})") from exc
    metrics.register()
    _state["metrics"] = metrics


def uninstall() -> None:
    """Observable instruments cannot be removed from a meter: they observe nothing until installed again."""
    metrics = _state.get("metrics")
    if metrics is not None:
        metrics.active = False
