"""The loop watchdog's lookup of what a blocked task is serving (both ways it is done).

The end-to-end test (``tests/test_insight_e2e.py``) blocks a real server's loop; these check
the lookup itself on any Python: from 3.12 the task's own context is read (the middleware set
the request's unit there), before that the middleware registers each request's task.
"""

from __future__ import annotations

import asyncio
import contextvars
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.trace import INVALID_SPAN

from otel_perf._core.work import Work, current_work
from otel_perf._integrations import event_loop


class _Config:
    @staticmethod
    def number(name: str) -> float:
        return 150.0


def _monitor(by_context: bool) -> event_loop.LoopMonitor:
    monitor = event_loop.LoopMonitor(SimpleNamespace(config=_Config()))  # type: ignore[arg-type]
    monitor.by_context = by_context
    return monitor


def _task_with(value: Any) -> Any:
    """A stand-in for a task whose context holds ``value`` as the current unit."""
    ctx = contextvars.copy_context()
    ctx.run(current_work.set, value)
    return SimpleNamespace(get_context=lambda: ctx)


def test_the_task_context_names_the_unit_in_flight() -> None:
    monitor = _monitor(by_context=True)
    work = Work("request", "/blocking", INVALID_SPAN, 10, "GET")
    assert monitor._work_of(_task_with(work)) is work


def test_a_task_that_outlived_its_request_is_not_that_request() -> None:
    """A task started during a request (fire and forget, a client's pool) copies its context."""
    monitor = _monitor(by_context=True)
    work = Work("request", "/spawns", INVALID_SPAN, 10, "GET")
    task = _task_with(work)
    work.done = True  # what ServerCore.finish sets when the request ends
    assert monitor._work_of(task) is None


def test_what_the_task_context_cannot_name() -> None:
    monitor = _monitor(by_context=True)
    assert monitor._work_of(_task_with(None)) is None  # code outside any unit
    assert monitor._work_of(_task_with("not a unit")) is None
    assert monitor._work_of(SimpleNamespace()) is None  # a task factory's own kind, no get_context


def test_registered_tasks_are_looked_up_by_id() -> None:
    monitor = _monitor(by_context=False)
    work = Work("request", "/blocking", INVALID_SPAN, 10, "GET")
    task = _task_with(None)  # its context is not read in this mode
    monitor.requests[id(task)] = work
    assert monitor._work_of(task) is work
    assert monitor._work_of(_task_with(work)) is None  # unregistered


@pytest.mark.parametrize("by_context", [True, False])
def test_requests_register_only_when_the_context_cannot_be_read(by_context: bool) -> None:
    monitor = _monitor(by_context)

    async def started() -> tuple[Any, Any]:
        monitor.ensure_started()
        try:
            return monitor.current_task(), asyncio.current_task()
        finally:
            monitor.stop()

    seen, task = asyncio.run(started())
    # what the middleware calls per request: nothing to register (None) reading contexts
    assert seen is (None if by_context else task)


def test_the_default_follows_the_python_version() -> None:
    assert _monitor(by_context=False).by_context is False
    fresh = event_loop.LoopMonitor(SimpleNamespace(config=_Config()))  # type: ignore[arg-type]
    assert fresh.by_context is hasattr(asyncio.Task, "get_context")


def test_a_quiet_monitor_reports_no_block_then_reports_again() -> None:
    """While our own flush holds the loop (the server stopped), no block is reported; the
    monitor is not stopped: a server started again in the process is watched as before."""
    from otel_perf._core.runtime import build_instruments
    from otel_perf._metrics.instruments import Registry

    registry = Registry()
    findings = SimpleNamespace(loop_blocks=[])
    limiter = SimpleNamespace(allow=lambda key: True)
    inst = build_instruments(registry)
    rt = SimpleNamespace(config=_Config(), findings=findings, warn_limiter=limiter, inst=inst)
    monitor = event_loop.LoopMonitor(rt)  # type: ignore[arg-type]
    monitor.quiet(60.0)
    monitor._report(2.9)
    assert findings.loop_blocks == []
    monitor.quiet(0.0)
    monitor._report(2.9)
    assert [b.lag_ms for b in findings.loop_blocks] == [2900.0]
    assert not monitor._stop.is_set()
