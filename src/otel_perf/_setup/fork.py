"""Pre-fork servers: every forked worker is its own instance.

gunicorn (with or without ``--preload``) forks workers from a master that already ran
our bootstrap.  Without help, every worker would export under the master's
``service.instance.id`` with the master's counters, and per-worker streams would collide
in the backend (lost or doubled counts).  After a fork the child gets a fresh instance id
and pid (the ``Resource`` object is shared by every provider, tracer and exporter, so it
is updated in place), empty instruments and findings, and a new start time.  The SDK's
batch processors and periodic reader restart their own threads after fork.
"""

from __future__ import annotations

import os
import time
import uuid

from opentelemetry.attributes import BoundedAttributes

from otel_perf._setup import runtime

_registered = False


def _after_fork_in_child() -> None:
    rt = runtime.get()
    if rt is None:
        return
    attrs = dict(rt.resource.attributes)
    attrs["service.instance.id"] = str(uuid.uuid4())
    attrs["process.pid"] = os.getpid()
    # Resource is immutable by API; one shared object makes an in-place update reach every
    # tracer and exporter that captured it before the fork.
    rt.resource._attributes = BoundedAttributes(attributes=attrs, immutable=True)  # type: ignore[attr-defined]
    for inst in rt.registry.instruments():
        inst.clear()
        inst.overflowed = 0
    rt.registry.start_time_ns = time.time_ns()
    rt.started = time.time()
    rt.findings.clear()
    rt.active.clear()


def register() -> None:
    global _registered
    if not _registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _registered = True
