"""Process metrics (CPU, memory, threads, open files, context switches, disk I/O, GC), as the
official instrumentation reports them.

We export every process metric of the official system-metrics instrumentation's default
configuration (the deprecated ``process.runtime.<implementation>.*`` names too: dashboards built
on stock read them).  They are read here rather than through
``opentelemetry.instrumentation.system_metrics``: its ``BaseInstrumentor`` brings ``packaging``,
``wrapt`` and a dozen semantic-convention modules for a few callbacks on ``psutil`` (which the
SDK's resource detection imports anyway).  Left out, with the official log handler's package
(``_setup/providers.py``), they are 1.6 MB of RSS in a process that loads no official
instrumentation.  The host-wide ``system.*`` metrics stock also exports are left out by default
(every worker of a host would report the same values; a collector's hostmetrics receiver is the
place for them): ``OTEL_PERF_HOST_METRICS=true`` exports them through the official instrumentor.
The process metrics come from the same ``psutil`` and ``gc`` calls, under the same names, units,
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
  the same string);
* ``process.runtime.<implementation>.cpu.utilization`` is the same reading as
  ``process.cpu.utilization`` (not divided by the CPUs): the official instrumentor calls psutil's
  ``cpu_percent()`` a second time a moment later, a share of almost no time.
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
#: what we export, in the official instrumentor's configuration format (metric -> its states):
#: every process metric of its default configuration, in its order (the deprecated
#: ``process.runtime.*`` ones too: dashboards built on stock read them)
CONFIG: dict[str, list[str] | None] = {
    "process.context_switches": ["involuntary", "voluntary"],
    n.PROCESS_CPU_TIME: ["user", "system"],
    n.PROCESS_CPU_UTILIZATION: None,
    n.PROCESS_MEMORY: None,
    "process.memory.virtual": None,
    "process.open_file_descriptor.count": None,
    n.PROCESS_THREADS: None,
    "process.disk.io": ["read", "write"],
    "process.runtime.memory": ["rss", "vms"],
    "process.runtime.cpu.time": ["user", "system"],
    "process.runtime.gc_count": None,
    n.GC_COLLECTIONS: None,
    "cpython.gc.collected_objects": None,
    "cpython.gc.uncollectable_objects": None,
    "process.runtime.thread_count": None,
    "process.runtime.cpu.utilization": None,
    "process.runtime.context_switches": ["involuntary", "voluntary"],
}
#: the interpreter's name in the deprecated ``process.runtime.<implementation>.*`` metric names
IMPLEMENTATION = platform.python_implementation().lower()
#: configuration key -> exported name, where they differ (the deprecated runtime metrics)
RUNTIME_NAMES = {
    "process.runtime.memory": f"process.runtime.{IMPLEMENTATION}.memory",
    "process.runtime.cpu.time": f"process.runtime.{IMPLEMENTATION}.cpu_time",
    "process.runtime.gc_count": f"process.runtime.{IMPLEMENTATION}.gc_count",
    "process.runtime.thread_count": f"process.runtime.{IMPLEMENTATION}.thread_count",
    "process.runtime.cpu.utilization": f"process.runtime.{IMPLEMENTATION}.cpu.utilization",
    "process.runtime.context_switches": f"process.runtime.{IMPLEMENTATION}.context_switches",
}


def exported_name(key: str) -> str:
    """The metric name a configuration key is exported under."""
    return RUNTIME_NAMES.get(key, key)

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
    "process.context_switches": ("counter", "Number of times the process has been context switched.", ""),
    "process.disk.io": ("counter", "Disk bytes transferred for the process.", "By"),
    "process.runtime.memory": ("up_down_counter", f"Runtime {IMPLEMENTATION} memory", "By"),
    "process.runtime.cpu.time": ("counter", f"Runtime {IMPLEMENTATION} CPU time", "s"),
    "process.runtime.gc_count": ("counter", f"Runtime {IMPLEMENTATION} GC count", "By"),  # sic
    "cpython.gc.collected_objects": (
        "counter",
        "The total number of objects collected since interpreter start.",
        "{object}",
    ),
    "cpython.gc.uncollectable_objects": (
        "counter",
        "The total number of uncollectable objects found since interpreter start.",
        "{object}",
    ),
    "process.runtime.thread_count": ("up_down_counter", "Runtime active threads count", ""),
    "process.runtime.cpu.utilization": ("gauge", "Runtime CPU utilization", "1"),
    "process.runtime.context_switches": ("counter", "Runtime context switches", "switches"),
}
#: what this platform cannot report (the official instrumentation leaves these out too)
UNAVAILABLE = frozenset(
    (["process.open_file_descriptor.count"] if sys.platform == "win32" else [])
    + (
        [n.GC_COLLECTIONS, "process.runtime.gc_count", "cpython.gc.collected_objects",
         "cpython.gc.uncollectable_objects"]
        if IMPLEMENTATION == "pypy"
        else []
    )
)  # fmt: skip


class ProcessMetrics:
    """The observable instruments and their callbacks (``active`` False: they observe nothing)."""

    def __init__(self, metrics: Iterable[str]) -> None:
        self.metrics = frozenset(metrics) - UNAVAILABLE
        self.active = True
        self._pid = 0
        self._process: Any = None
        #: this collection's CPU share (psutil's cpu_percent() measures since its previous call:
        #: read once, for process.cpu.utilization and the runtime twin)
        self._percent: float | None = None

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
            n.GC_COLLECTIONS: self._gc_stat("collections"),
            "process.context_switches": self._context_switches("process.context_switches"),
            "process.disk.io": self._disk_io,
            "process.runtime.memory": self._runtime_memory,
            "process.runtime.cpu.time": self._runtime_cpu_time,
            "process.runtime.gc_count": self._gc_count,
            "cpython.gc.collected_objects": self._gc_stat("collected"),
            "cpython.gc.uncollectable_objects": self._gc_stat("uncollectable"),
            "process.runtime.thread_count": self._thread_count,
            "process.runtime.cpu.utilization": self._runtime_cpu_utilization,
            "process.runtime.context_switches": self._context_switches("process.runtime.context_switches"),
        }
        metrics = self.metrics
        if metrics & {"process.context_switches", "process.runtime.context_switches"}:
            try:  # as the official instrumentor: not where psutil cannot read them (Cloud Run)
                self.process().num_ctx_switches()
            except Exception:
                metrics -= {"process.context_switches", "process.runtime.context_switches"}
        for key in CONFIG:  # the official instrumentor's order
            if key in metrics:
                kind, description, unit = INSTRUMENTS[key]
                callback = self._while_active(readers[key])
                name = exported_name(key)
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
        self._percent = percent = self.process().cpu_percent()
        return [Observation(percent / 100 / (psutil.cpu_count() or 1), {})]

    def _runtime_cpu_utilization(self, options: CallbackOptions) -> list[Observation]:
        # Read after process.cpu.utilization in the same collection: its reading, not a second
        # cpu_percent() a moment later (a share of almost no time; the official instrumentor's)
        percent, self._percent = self._percent, None
        if percent is None:
            percent = self.process().cpu_percent()
        return [Observation(percent / 100, {})]

    def _context_switches(self, key: str) -> Callable[[CallbackOptions], list[Observation]]:
        def read(options: CallbackOptions) -> list[Observation]:
            switches = self.process().num_ctx_switches()
            states = CONFIG[key] or ()
            return [Observation(getattr(switches, s), {"type": s}) for s in states if hasattr(switches, s)]

        return read

    def _disk_io(self, options: CallbackOptions) -> list[Observation]:
        try:
            io = self.process().io_counters()
        except (AttributeError, NotImplementedError, PermissionError, psutil.AccessDenied):
            return []  # not on every platform (macOS), nor in every sandbox
        return [
            Observation(io.read_bytes, {"direction": "read"}),
            Observation(io.write_bytes, {"direction": "write"}),
        ]

    def _runtime_memory(self, options: CallbackOptions) -> list[Observation]:
        memory = self.process().memory_info()
        return [Observation(getattr(memory, s), {"type": s}) for s in ("rss", "vms")]

    def _runtime_cpu_time(self, options: CallbackOptions) -> list[Observation]:
        times = self.process().cpu_times()
        return [Observation(getattr(times, s), {"type": s}) for s in ("user", "system")]

    def _gc_count(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(count, {"count": str(index)}) for index, count in enumerate(gc.get_count())]

    def _memory_usage(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self.process().memory_info().rss, {})]

    def _memory_virtual(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self.process().memory_info().vms, {})]

    def _open_file_descriptors(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self.process().num_fds(), {})]

    def _thread_count(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(self.process().num_threads(), {})]

    @staticmethod
    def _gc_stat(stat: str) -> Callable[[CallbackOptions], list[Observation]]:
        """``gc.get_stats()``'s ``stat`` per generation (collections, collected, uncollectable)."""

        def read(options: CallbackOptions) -> list[Observation]:
            # "generation" as well: the official instrumentation still sends the old name
            return [
                Observation(stats[stat], {"cpython.gc.generation": index, "generation": str(index)})
                for index, stats in enumerate(gc.get_stats())
            ]

        return read


def wanted(excluded: str) -> list[str]:
    """Our metrics minus those ``excluded`` (``OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS``) matches."""
    patterns = [p.strip() for p in excluded.split(",") if p.strip()]
    return [m for m in CONFIG if not any(fnmatch.fnmatch(m, p) for p in patterns)]


#: the host-wide metrics of the official instrumentor's default configuration, exported through
#: it under ``OTEL_PERF_HOST_METRICS=true`` (each process of a host reports the same values)
HOST_CONFIG: dict[str, list[str] | None] = {
    "system.cpu.time": ["idle", "user", "system", "irq"],
    "system.cpu.utilization": ["idle", "user", "system", "irq"],
    "system.memory.usage": ["used", "free", "cached"],
    "system.memory.utilization": ["used", "free", "cached"],
    "system.swap.usage": ["used", "free"],
    "system.swap.utilization": ["used", "free"],
    "system.disk.io": ["read", "write"],
    "system.disk.operations": ["read", "write"],
    "system.disk.time": ["read", "write"],
    "system.network.dropped.packets": ["transmit", "receive"],
    "system.network.packets": ["transmit", "receive"],
    "system.network.errors": ["transmit", "receive"],
    "system.network.io": ["transmit", "receive"],
    "system.network.connections": ["family", "type"],
    "system.thread_count": None,
}


def install_host_metrics(excluded: str, meter_provider: MeterProvider | None = None) -> list[str]:
    """The official instrumentor, for the host-wide metrics only (ours are the process's)."""
    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

    patterns = [p.strip() for p in excluded.split(",") if p.strip()]
    config = {k: v for k, v in HOST_CONFIG.items() if not any(fnmatch.fnmatch(k, p) for p in patterns)}
    if sys.platform == "darwin":  # as the official default: psutil cannot list them there
        config.pop("system.network.connections", None)
    if config:
        SystemMetricsInstrumentor(config=config).instrument(meter_provider=meter_provider)
    return list(config)


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
    if runtime is not None and runtime.config.flag("OTEL_PERF_HOST_METRICS"):
        _state["host"] = install_host_metrics(excluded)


def uninstall() -> None:
    """Observable instruments cannot be removed from a meter: they observe nothing until installed again."""
    metrics = _state.get("metrics")
    if metrics is not None:
        metrics.active = False
