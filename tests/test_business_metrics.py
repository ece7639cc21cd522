"""Issue 21: business metrics with the same zero-boilerplate feel.

The sample service creates tasks inside ``measure("tasks.create", ..., dimensions=["priority",
"status"])`` (status set inside the block), counts them with ``otel_perf.counter`` and records
a value with ``otel_perf.histogram``.  The real OTLP receiver must get the named dimensions on
the exported metrics, never an attribute that was not named (the customer id stays on the
span), and no more than ``OTEL_PERF_MAX_DIMENSION_VALUES`` values of a dimension: the rest are
``_OTHER`` and counted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support.launch import sqlite_urls, start_service
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess

pytestmark = pytest.mark.slow

TOKEN = "business-metrics-token-0123"


def test_measure_dimensions_counters_and_histograms_are_exported_and_bounded(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    db_url, _ = sqlite_urls(tmp_path)
    env = {"OTEL_PERF_MAX_DIMENSION_VALUES": "3", "OTEL_PERF_STATS_PATH": "/_perf",
           "OTEL_PERF_STATS_TOKEN": TOKEN}  # fmt: skip
    svc = start_service(app_process, otlp_receiver, db_url, env=env)
    for priority in ("p1", "p2", "p3", "p4", "p5"):
        for customer in ("c1", "customer-2"):
            r = httpx.post(svc.base + "/tasks", params={"priority": priority, "customer": customer})
            assert r.status_code == 200, r.text

    duration = "perf.operation.duration"
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count(duration, {"perf.operation.name": "tasks.create"}) == 10,
        timeout=30, what="ten tasks.create runs exported",
    )  # fmt: skip
    points = otlp_receiver.latest_points(duration, {"perf.operation.name": "tasks.create"})
    by_priority = {p.attributes["priority"]: p.count for p in points}
    assert by_priority == {"p1": 2, "p2": 2, "p3": 2, "_OTHER": 4}, by_priority
    assert {p.attributes["status"] for p in points} == {"created"}  # set inside the block
    assert all("customer.id" not in p.attributes for p in points)  # not a dimension: span only

    overflow = "perf.metric.dimension_overflow"
    otlp_receiver.wait_for(lambda: otlp_receiver.sum_value(overflow) == 8, timeout=30, what="overflow counts")
    counted = {
        (p.attributes["perf.metric.name"], p.attributes["perf.dimension.name"]): p.value
        for p in otlp_receiver.latest_points(overflow)
    }
    assert counted == {("perf.operation.duration", "priority"): 4, ("calendar.sync.events", "provider"): 4}

    assert otlp_receiver.sum_value("tasks.created", {"status": "created"}) == 10
    (created,) = otlp_receiver.latest_points("tasks.created")
    assert created.unit == "{task}" and created.is_monotonic
    # The last request counts its overflow before it records the event: wait for that event too.
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("calendar.sync.events") == 10, what="ten calendar.sync.events"
    )
    events = otlp_receiver.latest_points("calendar.sync.events")
    assert {p.attributes["provider"]: p.count for p in events} == {"p1": 2, "p2": 2, "p3": 2, "_OTHER": 4}
    assert sum(p.sum or 0 for p in events) == 5 * (20 + 100)

    spans = otlp_receiver.wait_for_spans(10, name="tasks.create")  # spans may leave after the metrics
    assert {s.attributes.get("customer.id") for s in spans} == {"c1", "customer-2"}
    assert {s.attributes.get("priority") for s in spans} == {"p1", "p2", "p3", "p4", "p5"}  # spans keep all

    stats = httpx.get(svc.base + "/_perf", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    (operation,) = [o for o in stats["operations"] if o["name"] == "tasks.create"]
    assert operation["count"] == 10 and operation["errors"] == 0
