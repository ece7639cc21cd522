"""Our process metrics against the official system-metrics instrumentation, side by side.

``otel_perf._integrations.system_metrics`` reads the process metrics itself instead of
importing the official instrumentor (1.8 MB of RSS); this runs both into their own meter
providers in this process and compares scope, names, units, descriptions, types, attributes
and values.
"""

from __future__ import annotations

import os
import select
import sys
import time
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum

from otel_perf._integrations import system_metrics
from otel_perf._integrations.system_metrics import CONFIG, ProcessMetrics, exported_name, wanted

#: every process metric the official instrumentor exports by default, by exported name
NAMES = {exported_name(key) for key in CONFIG}

pytestmark = pytest.mark.matrix  # the comparison on the oldest and the newest contrib too


def _collect(reader: InMemoryMetricReader) -> tuple[Any, dict[str, Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    (rm,) = data.resource_metrics
    (sm,) = rm.scope_metrics
    return sm, {m.name: m for m in sm.metrics}


def _points(metric: Any) -> dict[frozenset[tuple[str, Any]], float]:
    return {frozenset(p.attributes.items()): p.value for p in metric.data.data_points}


def test_the_same_points_as_the_official_instrumentor() -> None:
    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

    official_reader, ours_reader = InMemoryMetricReader(), InMemoryMetricReader()
    official_provider = MeterProvider(metric_readers=[official_reader])
    ours_provider = MeterProvider(metric_readers=[ours_reader])
    instrumentor = SystemMetricsInstrumentor(config=dict(CONFIG))
    instrumentor.instrument(meter_provider=official_provider)
    try:
        ProcessMetrics(CONFIG).register(ours_provider)
        # cpu_percent() is measured since the previous call on the same psutil.Process: the
        # first collection of each reads 0.0, the second a real share
        _collect(official_reader), _collect(ours_reader)
        spent = time.process_time()  # CPU between the two collections: psutil counts in 10 ms ticks
        while time.process_time() - spent < 0.1:
            sum(i * i for i in range(10_000))
        official_scope, official = _collect(official_reader)
        ours_scope, ours = _collect(ours_reader)
    finally:
        instrumentor.uninstrument()

    assert (ours_scope.scope.name, ours_scope.scope.version, ours_scope.scope.schema_url) == (
        official_scope.scope.name,
        official_scope.scope.version,
        official_scope.scope.schema_url,
    )
    assert sorted(ours) == sorted(official) == sorted(NAMES)
    assert "process.runtime.cpython.cpu_time" in NAMES  # the deprecated names stock dashboards read
    for name, theirs in official.items():
        mine = ours[name]
        assert (mine.unit, mine.description, type(mine.data)) == (
            theirs.unit,
            theirs.description,
            type(theirs.data),
        )
        if isinstance(theirs.data, Sum):
            assert mine.data.is_monotonic == theirs.data.is_monotonic, name
            assert mine.data.aggregation_temporality == theirs.data.aggregation_temporality, name
        assert set(_points(mine)) == set(_points(theirs)), name

    def value(metrics: dict[str, Any], name: str, **attrs: Any) -> float:
        return _points(metrics[name])[frozenset(attrs.items())]

    for state in ("user", "system"):  # ours was read a moment later
        theirs_s, mine_s = (
            value(official, "process.cpu.time", type=state),
            value(ours, "process.cpu.time", type=state),
        )
        assert theirs_s <= mine_s <= theirs_s + 1.0, state
    assert value(ours, "process.thread.count") == value(official, "process.thread.count") >= 1
    assert (
        abs(
            value(ours, "process.open_file_descriptor.count")
            - value(official, "process.open_file_descriptor.count")
        )
        <= 2
    )
    assert abs(value(ours, "process.memory.usage") - value(official, "process.memory.usage")) < 16 << 20
    assert abs(value(ours, "process.memory.virtual") - value(official, "process.memory.virtual")) < 64 << 20
    for generation in range(3):
        attrs = {"cpython.gc.generation": generation, "generation": str(generation)}
        theirs_gc = value(official, "cpython.gc.collections", **attrs)
        assert theirs_gc <= value(ours, "cpython.gc.collections", **attrs) <= theirs_gc + 5
    assert 0.0 < value(ours, "process.cpu.utilization") <= 1.0
    assert 0.0 < value(official, "process.cpu.utilization") <= 1.0
    # the runtime twin is the same reading, not divided by the CPUs (the official one calls
    # cpu_percent() again, a moment later: a share of almost no time)
    share = value(ours, "process.runtime.cpython.cpu.utilization")
    assert share == pytest.approx(value(ours, "process.cpu.utilization") * (os.cpu_count() or 1), rel=0.01)
    for kind in ("voluntary", "involuntary"):
        theirs_cs = value(official, "process.context_switches", type=kind)
        assert theirs_cs <= value(ours, "process.context_switches", type=kind) <= theirs_cs + 1000
        assert value(ours, "process.runtime.cpython.context_switches", type=kind) >= theirs_cs
    for direction in ("read", "write"):
        theirs_io = value(official, "process.disk.io", direction=direction)
        assert theirs_io <= value(ours, "process.disk.io", direction=direction) <= theirs_io + (1 << 20)
    for generation in range(3):
        attrs = {"cpython.gc.generation": generation, "generation": str(generation)}
        theirs_collected = value(official, "cpython.gc.collected_objects", **attrs)
        assert theirs_collected <= value(ours, "cpython.gc.collected_objects", **attrs)
        assert value(ours, "cpython.gc.uncollectable_objects", **attrs) == value(
            official, "cpython.gc.uncollectable_objects", **attrs
        )
    threads = "process.runtime.cpython.thread_count"
    assert value(ours, threads) == value(official, threads)
    assert abs(
        value(ours, "process.runtime.cpython.memory", type="rss")
        - value(official, "process.runtime.cpython.memory", type="rss")
    ) < 16 << 20


def test_installing_imports_no_instrumentor() -> None:
    """What the replacement is for: the official package (and BaseInstrumentor's imports) stay out."""
    code = (
        "import sys\n"
        "from otel_perf._integrations import system_metrics\n"
        "system_metrics.install(None)\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.startswith(('opentelemetry.instrumentation', 'wrapt', 'packaging')))\n"
        "print(heavy)\n"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


@pytest.mark.parametrize(
    ("excluded", "left_out"),
    [
        ("", set()),
        ("process.memory.*", {"process.memory.usage", "process.memory.virtual"}),
        (
            " cpython.* , process.cpu.utilization",
            {
                "cpython.gc.collections",
                "cpython.gc.collected_objects",
                "cpython.gc.uncollectable_objects",
                "process.cpu.utilization",
            },
        ),
        ("process.runtime.*", {k for k in CONFIG if k.startswith("process.runtime.")}),
        ("*", set(CONFIG)),
    ],
)
def test_excluded_metrics_variable(excluded: str, left_out: set[str]) -> None:
    assert set(wanted(excluded)) == set(CONFIG) - left_out
    reader = InMemoryMetricReader()
    ProcessMetrics(wanted(excluded)).register(MeterProvider(metric_readers=[reader]))
    data = reader.get_metrics_data()
    names = (
        {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        if data
        else set()
    )
    assert names == {exported_name(key) for key in set(CONFIG) - left_out}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_reports_itself() -> None:
    metrics = ProcessMetrics(CONFIG)
    assert metrics.process().pid == os.getpid()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report which process psutil reads now, and its memory callback
        try:
            rss = next(iter(metrics._memory_usage(None))).value  # type: ignore[arg-type]
            os.write(write, f"{metrics.process().pid} {rss}".encode())
        finally:
            os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 30)
    answer = os.read(read, 64).decode().split() if ready else []
    os.close(read)
    os.waitpid(pid, 0)
    assert answer and int(answer[0]) == pid
    assert int(answer[1]) > 0


def _points_of(reader: InMemoryMetricReader) -> list[Any]:
    data = reader.get_metrics_data()
    if not data:
        return []
    return [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
    ]


def test_uninstall_stops_observing_and_install_resumes() -> None:
    reader = InMemoryMetricReader()
    metrics = ProcessMetrics(CONFIG)
    metrics.register(MeterProvider(metric_readers=[reader]))
    system_metrics._state["metrics"] = metrics
    try:
        assert len(_points_of(reader)) >= len(CONFIG)
        system_metrics.uninstall()
        assert _points_of(reader) == []
        system_metrics.install(None)  # the same instruments, observing again
        assert system_metrics._state["metrics"] is metrics
        assert len(_points_of(reader)) >= len(CONFIG)
    finally:
        system_metrics._state.pop("metrics", None)


def test_host_metrics_are_the_official_instrumentors_on_request() -> None:
    """OTEL_PERF_HOST_METRICS=true: the host-wide ``system.*`` metrics stock exports, through the
    official instrumentor (its exclusion patterns honoured), beside our process metrics."""
    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

    from otel_perf._config import load
    from otel_perf._integrations.system_metrics import HOST_CONFIG, install_host_metrics

    assert load({})["OTEL_PERF_HOST_METRICS"] is False
    reader = InMemoryMetricReader()
    try:
        installed = install_host_metrics("system.network.*", MeterProvider(metric_readers=[reader]))
        _, metrics = _collect(reader)
    finally:
        SystemMetricsInstrumentor().uninstrument()
    host = {k for k in HOST_CONFIG if not k.startswith("system.network.")}
    assert set(installed) == host
    assert {"system.cpu.time", "system.memory.usage", "system.thread_count"} <= set(metrics) <= host
    used = _points(metrics["system.memory.usage"])[frozenset({("state", "used")})]
    assert used > 0


def test_the_host_metrics_switch_installs_the_official_instrumentor() -> None:
    """install() with OTEL_PERF_HOST_METRICS=true instruments the official system-metrics
    instrumentor for the host-wide metrics; without it, the instrumentor is not loaded."""
    from types import SimpleNamespace

    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

    from otel_perf._config import load
    from otel_perf._integrations.system_metrics import HOST_CONFIG

    for on in (False, True):
        env = {"OTEL_PERF_HOST_METRICS": "true"} if on else {}
        system_metrics._state.clear()
        try:
            system_metrics.install(SimpleNamespace(config=load(env)))
            assert SystemMetricsInstrumentor().is_instrumented_by_opentelemetry is on
            assert set(system_metrics._state.get("host", ())) == (set(HOST_CONFIG) if on else set())
        finally:
            SystemMetricsInstrumentor().uninstrument()
            system_metrics._state.clear()
