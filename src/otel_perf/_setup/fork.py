"""Pre-fork servers: every forked worker is its own instance, and nothing deadlocks.

gunicorn (with or without ``--preload``) forks workers from a master that already ran
our bootstrap.  Without help, every worker would export under the master's
``service.instance.id`` with the master's counters, and per-worker streams would collide
in the backend (lost or doubled counts).  After a fork the child gets a fresh instance id
and pid, empty instruments and findings, and a new start time.  The SDK's batch
processors and periodic reader restart their own threads after fork.

One identity per process: SDK 1.39+ providers refresh ``service.instance.id`` after a
fork on their own (with the SDK's per-pid id, into a *new* ``Resource`` object each),
while our instruments and exporters hold the ``Resource`` built at startup.  Left alone,
a worker's spans, logs and SDK metrics would carry one instance id and the master's pid,
and its HTTP metrics another id.  So we take the SDK's per-pid id, update our shared
``Resource`` in place (exporters and readers that captured it see the change) and merge
the same attributes into every provider.

No inherited locks: ``fork()`` copies locks in whatever state the parent's other threads
held them.  When the master's metric reader thread was collecting or exporting at that
moment, the worker's copies stay locked forever and the worker never exports metrics
again (opentelemetry-python#4345, fix pending in #4767; measured here: about one gunicorn
worker in ten with a 500 ms export interval).  Before a fork we wait (briefly, bounded)
for a running collection to finish and hold the collection lock across the fork; in the
child every lock a reader thread of the parent could have held is replaced by a new one.

No import in flight: a module being imported holds its import lock until it has run, and a
fork copies that lock held by a thread the child does not have.  The exporters' first
connection imports the ``idna`` codec lazily (urllib3 encodes the host name), so a fork while
the master's export thread was doing that froze every export thread of the worker forever
(measured: about one gunicorn ``--preload`` start in twenty lost a worker's telemetry).  We
import what the export threads would import lazily before any of them starts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

from opentelemetry.attributes import BoundedAttributes

from otel_perf._core import runtime

logger = logging.getLogger("otel_perf")
_registered = False
#: Longest a fork waits for a metric collection in progress (collections take milliseconds).
BEFORE_FORK_WAIT_S = 1.0
_held: list[Any] = []


def _instance_id() -> str:
    """The SDK's id for this pid (what its providers put in after a fork), else a new UUID."""
    try:
        from opentelemetry.sdk.resources import ServiceInstanceIdResourceDetector  # SDK 1.39+

        value = ServiceInstanceIdResourceDetector().detect().attributes.get("service.instance.id")
        if isinstance(value, str) and value:
            return value
    except Exception:  # older SDK, or a detector that failed: our own id is as good
        pass
    return str(uuid.uuid4())


def _pipeline(rt: Any) -> Any:
    return getattr(rt, "pipeline", None)


def _providers(rt: Any) -> list[Any]:
    pipeline = _pipeline(rt)
    if pipeline is None:
        return []
    return [
        p
        for p in (pipeline.tracer_provider, pipeline.meter_provider, pipeline.logger_provider)
        if p is not None
    ]


def _measurement_consumer(rt: Any) -> Any:
    pipeline = _pipeline(rt)
    return getattr(getattr(pipeline, "meter_provider", None), "_measurement_consumer", None)


def _before_fork() -> None:
    """In the parent: let a running collection finish and keep a new one from starting."""
    try:
        rt = runtime.get()
        lock = getattr(_measurement_consumer(rt), "_lock", None) if rt is not None else None
        if lock is not None and lock.acquire(timeout=BEFORE_FORK_WAIT_S):
            _held.append(lock)
    except Exception:  # a fork must never fail because of us
        logger.debug("before-fork hook failed", exc_info=True)


def _after_fork_in_parent() -> None:
    while _held:
        _held.pop().release()


def _after_fork_in_child() -> None:
    _held.clear()  # the child gets fresh locks below instead of releasing copies
    try:
        _fresh_locks()
        _reset_identity()
    except Exception:  # never break the worker; telemetry keeps the master's identity at worst
        logger.warning("otel-perf: could not give this worker its own service.instance.id", exc_info=True)
    try:
        _forget_connections()
    except Exception:
        logger.debug("could not drop the parent's exporter connections", exc_info=True)


def _forget_connections() -> None:
    """Drop the exporters' pooled HTTP connections the child inherited from its parent.

    A keep-alive connection the parent's exporters opened (the master of ``gunicorn
    --preload`` exports its own telemetry) is one socket shared by the parent and every
    worker forked from it: their requests and responses interleave on it, and one process
    reads another's answer.  Each child closes its copies (closing a copy does not end the
    parent's connection) and opens its own on its first export.
    """
    rt = runtime.get()
    pipeline = _pipeline(rt) if rt is not None else None
    if pipeline is None:
        return
    for pool in _http_pools(pipeline.exporters):
        pool.clear()


def _http_pools(root: Any, depth: int = 10) -> list[Any]:
    """The urllib3 pool managers reachable from ``root`` through instance attributes (bounded walk).

    The SDK's OTLP/HTTP exporters keep theirs privately, in a transport object or a requests
    session (whose adapters hold one each); walking from the exporters finds them wherever
    the SDK release keeps them: ours reach them through the SDK's HTTP client, nine levels
    down (exporter list, exporter, client, transport, session, adapters, adapter, pool
    manager).  gRPC exporters hold no urllib3 pool (gRPC handles forks), and our http.client
    transport drops its own connection after a fork (``otlp_transport``).
    """
    try:
        from urllib3 import PoolManager
    except ImportError:
        return []
    found: list[Any] = []
    seen: set[int] = set()
    level = [root]
    for _ in range(depth):
        following: list[Any] = []
        for obj in level:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, PoolManager):
                found.append(obj)
                continue
            children: Any
            if isinstance(obj, (list, tuple)):
                children = obj
            elif isinstance(obj, dict):
                children = obj.values()
            else:
                children = getattr(obj, "__dict__", {}).values()
            following.extend(
                c for c in children if not isinstance(c, (str, bytes, int, float, bool, type(None)))
            )
        level = following
    return found


def _fresh_locks() -> None:
    """Replace every lock a thread of the parent may have held when it forked."""
    rt = runtime.get()
    if rt is None:
        return
    groups = set()
    for inst in rt.registry.instruments():
        group = getattr(inst, "_group", None)
        if group is None:
            inst._lock = threading.Lock()
        else:  # histograms that share a lock (RequestRecorder) get one new lock between them
            groups.add(group)
    for group in groups:
        group.renew_lock()
    rt.findings._lock = threading.Lock()
    rt.warn_limiter._lock = threading.Lock()
    consumer = _measurement_consumer(rt)
    if consumer is not None and hasattr(consumer, "_lock"):
        consumer._lock = threading.Lock()
        for storage in getattr(consumer, "_reader_storages", {}).values():
            if hasattr(storage, "_lock"):
                storage._lock = threading.RLock()
    pipeline = _pipeline(rt)
    for reader in getattr(pipeline, "readers", None) or ():
        if hasattr(reader, "_export_lock"):  # held by the parent's reader thread during an export
            reader._export_lock = threading.Lock()


def _reset_identity() -> None:
    rt = runtime.get()
    if rt is None:
        return
    attrs = dict(rt.resource.attributes)
    attrs["service.instance.id"] = _instance_id()
    attrs["process.pid"] = os.getpid()
    # Resource is immutable by API; one shared object makes an in-place update reach every
    # exporter and reader that captured it before the fork.
    rt.resource._attributes = BoundedAttributes(attributes=attrs, immutable=True)
    for provider in _providers(rt):
        update = getattr(provider, "_update_resource", None)
        if update is not None:  # SDK providers that replaced their resource after the fork
            update(rt.resource)
    rt.registry.reset()  # empty instruments, a new start time, no delta state of the master's
    rt.started = time.time()
    rt.findings.clear()
    rt.active.clear()
    pipeline = _pipeline(rt)
    if pipeline is not None:  # a worker forked from a supervisor (gunicorn's arbiter) serves
        pipeline.supervisor = False


def _preload_lazy_imports() -> None:
    """Import now, in this thread, what background export threads would import on first use."""
    "localhost".encode("idna")  # urllib3/http.client resolve the codec (encodings.idna) lazily
    # requests (the SDK exporters' transport for https, proxies, netrc or credential providers)
    # reads ~/.netrc on every request: netrc, and shlex on Python 3.10, are imported then.
    import netrc  # noqa: F401
    import shlex  # noqa: F401


def register() -> None:
    """Install the fork hooks (idempotent) and preload what export threads import lazily.

    Call it before the SDK providers and readers are created: ``after_in_child`` hooks run
    in registration order, and ours must have renewed the locks and the identity before
    the SDK's hooks restart the reader and processor threads.
    """
    global _registered
    if not _registered:
        _preload_lazy_imports()
    if not _registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(
            before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
        )
        _registered = True
