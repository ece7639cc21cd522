"""asyncio event-loop lag, and which request blocked the loop.

A timer callback on the app's loop re-arms itself every tick and records how late it ran
(``perf.asyncio.loop.lag``): the time a ready callback waited.  A watchdog thread checks
the callback's heartbeat; when the loop has not come round for ``OTEL_PERF_LOOP_BLOCK_MS``
it looks up the task running on the loop at that moment, finds the request (or background
job) that task is serving, and remembers it: from Python 3.12 on it reads the unit of work
from the task's own context (``Task.get_context()``, where the middleware set it), so
requests pay nothing for this; before 3.12 the middleware registers each request's task in
:attr:`LoopMonitor.requests` (a task lookup and two dict operations per request).  When the loop comes
back, one WARNING names the route and trace id of the request that blocked it: the
classic "sync call inside an async endpoint" bug.

Both sides are paid per second, not per request, so they matter most to slow endpoints
(at 750 requests/s, 9 ms/s of CPU is 12 µs per request).  The tick is a bare
``call_later`` callback (no task, coroutine or future per tick), and the watchdog sleeps
until the moment a late heartbeat would mean a blocked loop instead of polling: about
seven wake-ups a second on a healthy loop rather than forty.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
import types
from collections.abc import Callable
from typing import Any

from otel_perf._analysis.findings import LoopBlock, recommend_loop_block
from otel_perf._core import guard
from otel_perf._core.probes import forced_off
from otel_perf._core.runtime import Runtime
from otel_perf._core.work import Work, current_work

logger = logging.getLogger("otel_perf")
TICK = 0.05


class LoopMonitor:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.block_s = runtime.config.number("OTEL_PERF_LOOP_BLOCK_MS") / 1000.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heartbeat = time.monotonic()
        #: id(task) -> the request that task serves; the middleware adds and removes entries
        #: (before Python 3.12: from 3.12 on the watchdog reads the task's context instead)
        self.requests: dict[int, Work] = {}
        #: the task running on the monitored loop now (None until the loop is known, and
        #: always None when the watchdog reads the task's context: nothing to register)
        self.current_task: Callable[[], asyncio.Task[Any] | None] = _no_task
        self.by_context = _TASK_CONTEXT and not forced_off("asyncio-task-context")
        self._blocker: Work | None = None
        self._stop = threading.Event()
        self._pid = 0
        #: no block is reported before this (time.monotonic()): our own bounded flush holds
        #: the loop's thread when a server stops (:meth:`quiet`)
        self._quiet_until = 0.0

    # --- called by the middleware (event-loop thread) -------------------------------
    def ensure_started(self) -> None:
        if self._loop is not None and self._pid == _pid():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._loop = loop
        if not self.by_context:
            self.current_task = _task_getter(loop)
        self._pid = _pid()
        self._heartbeat = now = time.monotonic()
        loop.call_later(TICK, self._tick, now)
        threading.Thread(target=self._watch, name="otel-perf-loop-watchdog", daemon=True).start()

    # --- the loop side -------------------------------------------------------------
    def _tick(self, armed: float) -> None:
        """Runs TICK after ``armed`` if the loop is free; records how late it ran and re-arms."""
        if self._stop.is_set():
            return
        now = time.monotonic()
        self._heartbeat = now
        lag = now - armed - TICK
        try:
            self.rt.inst.loop_lag.record(lag if lag > 0.0 else 0.0, ())
            if lag >= self.block_s:
                self._report(lag)
        except Exception as exc:
            guard.internal_error("loop.tick", exc)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_later(TICK, self._tick, now)

    def quiet(self, seconds: float) -> None:
        """Report no blocked loop for ``seconds`` (the loop keeps being measured)."""
        self._quiet_until = time.monotonic() + seconds

    def _report(self, lag: float) -> None:
        work, self._blocker = self._blocker, None
        if time.monotonic() < self._quiet_until:
            return
        route = work.where() if work is not None else ""
        method = work.method if work is not None else ""
        trace_id = work.trace_id_hex if work is not None else ""
        advice = recommend_loop_block(f"{method} {route}".strip())
        self.rt.findings.loop_blocks.append(
            LoopBlock(round(lag * 1000, 3), route, method, trace_id, time.time(), advice)
        )
        if self.rt.warn_limiter.allow(("loop-block", method, route)):
            logger.warning(
                "event loop blocked for %.0f ms (threshold %.0f ms) by %s trace_id=%s",
                lag * 1000,
                self.block_s * 1000,
                f"{method} {route}".strip() or "code outside a request",
                trace_id,
                extra={
                    "perf.finding": "event_loop_blocked",
                    "http.route": route,
                    "perf.lag_ms": round(lag * 1000, 3),
                    "perf.blocking_trace_id": trace_id,
                    "perf.recommendation": advice,
                },
            )

    # --- the watchdog thread -------------------------------------------------------
    def _watch(self) -> None:
        late = TICK + self.block_s  # a heartbeat this old means the loop is blocked
        poll = max(0.01, self.block_s / 4)  # while it is
        while True:
            wait = self._heartbeat + late - time.monotonic()
            if self._stop.wait(wait if wait > 0.0 else poll):
                return
            loop = self._loop
            if loop is None or loop.is_closed():
                return
            if time.monotonic() - self._heartbeat < late or self._blocker is not None:
                continue
            try:
                task = asyncio.current_task(loop)
            except RuntimeError:
                continue
            if task is not None:
                self._blocker = self._work_of(task)

    def _work_of(self, task: asyncio.Task[Any]) -> Work | None:
        """The request or job ``task`` is serving (the watchdog thread, while the loop is blocked)."""
        if not self.by_context:
            return self.requests.get(id(task))
        get_context = getattr(task, "get_context", None)  # a task factory's own kind may lack it
        if get_context is None:
            return None
        work = get_context().get(current_work)
        # A task a request started (fire and forget, a client's pool) copied the request's
        # context and keeps its unit after the request ended: that task is not the request.
        if not isinstance(work, Work) or getattr(work, "done", False):
            return None
        return work

    def stop(self) -> None:
        """Stop both sides (from any thread): the next tick does not re-arm."""
        self._stop.set()


#: "no task": a C callable returning None (``NoneType()``), so a request calling it on 3.12+,
#: where nothing registers, runs no Python frame
_no_task: Callable[[], None] = type(None)


#: ``Task.get_context()`` (Python 3.12+): the watchdog finds a blocked task's request there
_TASK_CONTEXT = hasattr(asyncio.Task, "get_context")


def _task_getter(loop: asyncio.AbstractEventLoop) -> Callable[[], asyncio.Task[Any] | None]:
    """``asyncio.current_task`` for ``loop``, with no Python frame per call.

    Before Python 3.12 ``asyncio.current_task`` is Python code reading the dict that the C
    tasks keep up to date; a bound ``dict.get`` on that dict is the same lookup in C.
    """
    current = asyncio.current_task
    tasks: Any = getattr(asyncio.tasks, "_current_tasks", None)
    if forced_off("asyncio-current-tasks"):
        tasks = None
    if not isinstance(current, types.BuiltinFunctionType) and isinstance(tasks, dict):
        return functools.partial(tasks.get, loop)
    return functools.partial(current, loop)


def _pid() -> int:
    return os.getpid()


def install(runtime: Runtime, _module: Any = None) -> None:
    """The asyncio row: a monitor the server adapters start on the app's loop."""
    monitor = runtime.loop_monitor = LoopMonitor(runtime)
    if runtime.pipeline is not None:
        runtime.pipeline.shutdown_hooks.append(monitor.stop)


def uninstall() -> None:
    """Nothing is patched: the monitor stops with the pipeline."""
