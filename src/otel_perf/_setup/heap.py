"""Keep the start-up heap out of the app's garbage collections.

Loading the telemetry SDK, its exporters and this package adds ~20,000 long-lived objects
to a process (the benchmark app: 79,000 objects tracked by the collector bare, 98,000
instrumented).  CPython's full (generation 2) collection walks every tracked object, and a
busy app runs one every few hundred requests, so those objects make each of the app's
full collections slower: measured on the benchmark's ``/db`` endpoint, 30 ms -> 46 ms per
full collection and +30 µs of collector time per request, a quarter of all we added.

``gc.freeze()`` moves every object alive at that moment into a permanent generation that
no collection visits.  The launcher calls :func:`freeze_startup_heap` once, when its
bootstrap (and any ``sitecustomize`` of the environment) has run and before the app's
own code is imported, so what is frozen is module-level state that lives as long as the
process anyway: the interpreter's, the standard library's, the SDK's and ours.  A
collection first frees the start-up garbage, so nothing unreachable is frozen.  Objects
the app creates afterwards are collected as before.  Forking servers gain too: children
no longer write to those objects' GC headers, so their pages stay shared.

Only our launcher's start-up does it (under ``opentelemetry-instrument``, which runs our
configurator from its own ``sitecustomize``, the moment is not ours to pick).
``OTEL_PERF_GC_FREEZE=false`` turns it off.
"""

from __future__ import annotations

import gc

from otel_perf._core import runtime


def freeze_startup_heap() -> int:
    """Freeze the objects alive now if telemetry is on and the setting allows; how many were frozen."""
    rt = runtime.get()
    if rt is None or not rt.config.flag("OTEL_PERF_GC_FREEZE") or not gc.isenabled():
        return 0
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
