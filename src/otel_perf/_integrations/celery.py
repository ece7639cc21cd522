"""Celery: every task run in a worker is a job of its own; the worker's logs are exported.

Spans and producer-to-worker propagation are the official Celery instrumentation's
(``opentelemetry-instrumentation-celery``, in our ``celery`` extra: a PRODUCER span
``apply_async/<task>`` where the task is sent, a CONSUMER span ``run/<task>`` in the worker,
one trace).  This adapter adds, through Celery's signals:

* a unit of work per task run (:mod:`otel_perf._core.jobs`), opened at ``task_prerun`` and
  closed at ``task_postrun``: ``perf.job.duration`` by ``perf.job.system="celery"``,
  ``perf.job.name`` (the task name) and ``error.type`` (the exception of a failed run,
  ``Retry`` for a retried one); ``perf.job.queries``; N+1 and slow-query findings naming the
  task; ``perf.db.query_count`` on the consumer span.  Without the official instrumentation
  the run gets a span of ours instead.
* the time a task waited in the queue, ``perf.job.queue_wait``: ``before_task_publish`` puts
  the send time in a message header (``otel_perf_sent_at``), ``task_prerun`` subtracts it
  from now (from the ``eta`` for delayed tasks), so it counts only when both ends run us.
* logs: a worker hijacks the root logger (``worker_hijack_root_logger``) and gives task
  loggers handlers of their own that do not propagate; ``after_setup_logger`` and
  ``after_setup_task_logger`` give both our handlers back (the JSON/text lines replace
  Celery's stderr handler, a ``--logfile`` is kept; the OTLP handler is added), so task log
  records leave the worker with the task's trace id.

The worker's stats endpoint and exit report list its jobs.  Clock note: the queue wait
compares the sender's and the worker's wall clocks.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from types import ModuleType
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan

from otel_perf._core import guard
from otel_perf._core.caches import bookkeeping
from otel_perf._core.imports import when_imported
from otel_perf._core.jobs import JobRun, Jobs
from otel_perf._core.patching import Patches
from otel_perf._core.runtime import Runtime

SYSTEM = "celery"
#: The message header carrying the send time (seconds since the epoch, as a float).
SENT_AT = "otel_perf_sent_at"
#: Runs in progress kept at most (a worker killed mid-task never sends postrun).
MAX_RUNNING = 10_000
_state: dict[str, Any] = {}
_lock = threading.Lock()
_PLACEHOLDER = NonRecordingSpan(INVALID_SPAN_CONTEXT)
_patches = Patches("celery")


class _Tracker:
    """The signal handlers of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.jobs = Jobs(runtime)
        #: task id -> (run, exception of a failure so far)
        self.running: dict[str, list[Any]] = {}
        self.dropped = 0

    # --- a pool process ------------------------------------------------------------------
    def process_shutdown(self, **_: Any) -> None:
        """A prefork pool process is about to leave with ``os._exit`` (``atexit`` never runs
        there): export what its tasks recorded, bounded by ``OTEL_PERF_SHUTDOWN_TIMEOUT``.
        Sent at the worker's shutdown and whenever a process is recycled
        (``--max-tasks-per-child``, ``--max-memory-per-child``)."""
        pipeline = self.rt.pipeline
        if pipeline is None:
            return
        try:
            pipeline.flush(self.rt.config.number("OTEL_PERF_SHUTDOWN_TIMEOUT"))
        except Exception as exc:
            guard.internal_error("celery.process_shutdown", exc)

    # --- the sender ---------------------------------------------------------------------
    def before_publish(self, sender: Any = None, headers: Any = None, **_: Any) -> None:
        try:
            if isinstance(headers, dict):
                headers[SENT_AT] = time.time()
        except Exception as exc:
            guard.internal_error("celery.before_task_publish", exc)

    # --- the worker ---------------------------------------------------------------------
    def prerun(self, task_id: Any = None, task: Any = None, **_: Any) -> None:
        try:
            if task is None or task_id is None:
                return
            self.rt.apps.add("Celery")
            span = _official_span(task, task_id)
            if span is None and _official_active():
                span = _PLACEHOLDER  # its prerun runs after ours: adopted at postrun
            run = self.jobs.begin(SYSTEM, str(task.name), span=span, queue_wait=_queue_wait(task.request))
            if run is None:
                return
            with _lock:
                if len(self.running) >= MAX_RUNNING:
                    self.dropped += 1
                    self.running.pop(next(iter(self.running)))
                self.running[str(task_id)] = [run, None]
        except Exception as exc:
            guard.internal_error("celery.task_prerun", exc)

    def failure(self, task_id: Any = None, exception: Any = None, **_: Any) -> None:
        entry = self.running.get(str(task_id))
        if entry is not None and isinstance(exception, BaseException):
            entry[1] = exception

    def postrun(self, task_id: Any = None, task: Any = None, state: Any = None, **_: Any) -> None:
        try:
            with _lock:
                entry = self.running.pop(str(task_id), None)
            if entry is None:
                return
            run: JobRun = entry[0]
            error: BaseException | None = entry[1]
            if run.work.span is _PLACEHOLDER:
                span = _official_span(task, task_id)
                self.jobs.adopt(run, span if span is not None else trace.get_current_span())
            self.jobs.end(run, error, "Retry" if error is None and state == "RETRY" else "")
        except Exception as exc:
            guard.internal_error("celery.task_postrun", exc)

    # --- logging ------------------------------------------------------------------------
    def after_setup_logger(self, logger: Any = None, logfile: Any = None, **_: Any) -> None:
        _reattach(logger or logging.getLogger(), logfile)

    def after_setup_task_logger(self, logger: Any = None, logfile: Any = None, **_: Any) -> None:
        _reattach(logger, logfile)


def _reattach(lg: Any, logfile: Any) -> None:
    try:
        if isinstance(lg, logging.Logger):
            from otel_perf._integrations import logs

            logs.reattach(lg, replace_stderr=not logfile)
    except Exception as exc:
        guard.internal_error("celery.logging", exc)


def _queue_wait(request: Any) -> float | None:
    """Seconds between the send (or the ``eta`` of a delayed task) and now; None when unknown."""
    sent = getattr(request, SENT_AT, None)
    if sent is None and hasattr(request, "get"):
        sent = request.get(SENT_AT)
    if not isinstance(sent, (int, float)):
        return None
    start = float(sent)
    eta = getattr(request, "eta", None)
    if eta:
        try:
            due = (eta if isinstance(eta, datetime) else datetime.fromisoformat(str(eta))).timestamp()
            start = max(start, due)
        except (TypeError, ValueError):
            pass
    return max(time.time() - start, 0.0)


def _official_span(task: Any, task_id: Any) -> trace.Span | None:
    """The official instrumentation's consumer span of this run (its own bookkeeping, probed)."""
    try:
        from opentelemetry.instrumentation.celery import utils  # type: ignore[import-untyped,unused-ignore]

        found = utils.retrieve_context(task, task_id)
    except Exception:  # not installed, or it keeps its spans elsewhere now
        return None
    if isinstance(found, tuple) and found and isinstance(found[0], trace.Span):
        return found[0]
    return None


def _official_active() -> bool:
    try:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor  # type: ignore[import-untyped,unused-ignore]

        return bool(CeleryInstrumentor().is_instrumented_by_opentelemetry)  # type: ignore[no-untyped-call]
    except Exception:
        return False


def _backend_reads(original: Any) -> Any:
    def read(self: Any, *args: Any, **kwargs: Any) -> Any:
        with bookkeeping():
            return original(self, *args, **kwargs)

    return read


def _hook_redis_backend(backend: ModuleType) -> None:
    """The Redis result backend's reads (polling for a result) are not cache reads."""
    for name in ("get", "mget"):
        if name in vars(backend.RedisBackend):
            _patches.wrap(backend.RedisBackend, name, _backend_reads)


def install(runtime: Runtime, celery: ModuleType | None) -> None:
    """Connect to Celery's signals (``celery`` was imported)."""
    if "tracker" in _state:
        return
    from celery import signals

    when_imported("celery.backends.redis", _hook_redis_backend)

    tracker = _Tracker(runtime)
    connections = [
        (signals.before_task_publish, tracker.before_publish),
        (signals.task_prerun, tracker.prerun),
        (signals.task_failure, tracker.failure),
        (signals.task_postrun, tracker.postrun),
        (signals.after_setup_logger, tracker.after_setup_logger),
        (signals.after_setup_task_logger, tracker.after_setup_task_logger),
        (signals.worker_process_shutdown, tracker.process_shutdown),
    ]
    for signal, handler in connections:
        signal.connect(handler, weak=False)
    _state["tracker"] = tracker
    _state["connections"] = connections


def uninstall() -> None:
    _patches.restore()
    for signal, handler in _state.pop("connections", []):
        signal.disconnect(handler)
    _state.clear()
