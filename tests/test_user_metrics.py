"""Issue 21 in process: ``counter()``, ``histogram()`` and ``measure()`` dimensions, as exported data."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

import otel_perf
from otel_perf._config import load
from otel_perf._core import runtime
from otel_perf._core.runtime import Runtime, build_instruments
from otel_perf._metrics.bridge import to_metrics
from otel_perf._metrics.instruments import Registry


@pytest.fixture
def rt() -> Iterator[Runtime]:
    registry = Registry()
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("t")
    config = load({"OTEL_PERF_MAX_DIMENSION_VALUES": "2"})
    current = Runtime(config, tracer, registry, build_instruments(registry), Resource.create({}))
    previous = runtime.get()
    runtime.set_runtime(current)
    yield current
    runtime.set_runtime(previous)


def _points(rt: Runtime, name: str) -> list[tuple[dict[str, object], object]]:
    (metric,) = [m for m in to_metrics(rt.registry) if m.name == name]
    out = []
    for p in metric.data.data_points:
        out.append((dict(p.attributes or {}), getattr(p, "value", None) if hasattr(p, "value") else p.count))
    return sorted(out, key=str)


def test_without_the_launcher_they_do_nothing() -> None:
    assert runtime.get() is None
    otel_perf.counter("nothing.here").add(1, status="x")
    otel_perf.histogram("nothing.there").record(3.0)
    with otel_perf.measure("op", {"a": 1}, dimensions=["a"]) as m:
        m.set_attribute("b", 2)


def test_counter_and_histogram_export_their_dimensions_bounded(rt: Runtime) -> None:
    tasks = otel_perf.counter("tasks.created", unit="{task}", dimensions=["status"])
    for status in ("new", "done", "new", "late", "lost"):
        tasks.add(1, status=status)
    assert otel_perf.counter("tasks.created", dimensions=["status"]).instrument is tasks.instrument
    assert _points(rt, "tasks.created") == [
        ({"status": "_OTHER"}, 2), ({"status": "done"}, 1), ({"status": "new"}, 2)
    ]
    assert _points(rt, "perf.metric.dimension_overflow") == [
        ({"perf.metric.name": "tasks.created", "perf.dimension.name": "status"}, 2)
    ]
    sizes = otel_perf.histogram("sync.events", unit="{event}", dimensions=["provider"], bounds=[10, 100])
    sizes.record(42, {"provider": "google"})
    (metric,) = [m for m in to_metrics(rt.registry) if m.name == "sync.events"]
    (point,) = metric.data.data_points
    assert dict(point.attributes) == {"provider": "google"}
    assert tuple(point.explicit_bounds) == (10, 100) and tuple(point.bucket_counts) == (0, 1, 0)


def test_misuse_warns_once_and_never_raises(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "otel_perf")
    tasks = otel_perf.counter("tasks.done", dimensions=["status"])
    tasks.add(-1, status="x")
    tasks.add(1, user="alice")
    assert len([r for r in caplog.records if "tasks.done" in r.getMessage()]) == 1
    assert "only grows" in caplog.records[-1].getMessage()
    clash = otel_perf.counter("http.server.request.duration")
    clash.add(1)
    assert "exists already" in caplog.records[-1].getMessage()
    bad = otel_perf.histogram("9 not a name")
    bad.record(1)
    assert "not a valid metric name" in caplog.records[-1].getMessage()
    assert _points(rt, "tasks.done") == [({}, 1)]  # the negative add left out, "user" dropped


def test_measure_dimensions_include_attributes_set_inside_the_block(rt: Runtime) -> None:
    with otel_perf.measure("tasks.create", {"priority": "high", "customer.id": "c-1"},
                           dimensions=["priority", "status"]) as m:  # fmt: skip
        m.set_attribute("status", "created")
    with pytest.raises(ValueError, match="nope"), otel_perf.measure("tasks.create", dimensions=["priority"]):
        raise ValueError("nope")
    durations = _points(rt, "perf.operation.duration")
    assert durations == [
        ({"perf.operation.name": "tasks.create", "error.type": "ValueError"}, 1),
        ({"perf.operation.name": "tasks.create", "priority": "high", "status": "created"}, 1),
    ]
    assert _points(rt, "perf.operation.errors") == [
        ({"perf.operation.name": "tasks.create", "error.type": "ValueError"}, 1)
    ]


def test_user_and_tenant_sources_are_validated() -> None:
    from otel_perf._core.request_extras import parse_source

    assert parse_source("header:X-User-Id") == ("header", "x-user-id")
    assert parse_source("baggage:tenant.id") == ("baggage", "tenant.id")
    config = load({"OTEL_PERF_ENDUSER_FROM": "cookie:session", "OTEL_PERF_TENANT_FROM": "header:",
                   "OTEL_PERF_HEALTH_PATH": "healthz"})  # fmt: skip
    bad = {p.env: p.message() for p in config.problems}
    assert set(bad) == {"OTEL_PERF_ENDUSER_FROM", "OTEL_PERF_TENANT_FROM", "OTEL_PERF_HEALTH_PATH"}
    assert "expected header:<name> or baggage:<key>" in bad["OTEL_PERF_ENDUSER_FROM"]
    assert config.text("OTEL_PERF_ENDUSER_FROM") == "" and config.text("OTEL_PERF_HEALTH_PATH") == ""
