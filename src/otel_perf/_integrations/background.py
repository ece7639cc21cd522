"""Starlette/FastAPI ``BackgroundTasks``: each task run after the response is a job of its own.

Starlette runs a response's background tasks inside the response call, after the body is
sent, so they ran inside the request's span, duration and unit of work: a 300 ms task made a
2 ms request a "316 ms" slow request, and its queries counted towards the request.  The
server middleware ends the request when its response is complete
(:mod:`otel_perf._integrations.asgi`); this adapter wraps ``BackgroundTask.__call__``
(``BackgroundTasks`` runs each of its tasks through it) so that every task is a job run of
its own (:mod:`otel_perf._core.jobs`): an INTERNAL span ``background <module>.<function>``
(a child of the request's span, in the same trace), ``perf.job.duration`` and
``perf.job.queries`` by ``perf.job.system="background"`` and ``perf.job.name``, its failures
by ``error.type``, and N+1 and slow-query findings naming the job.  A task that blocks the
event loop is reported as the job's, not the request's.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from otel_perf._core import guard
from otel_perf._core.jobs import Jobs
from otel_perf._core.patching import Patches
from otel_perf._core.runtime import Runtime
from otel_perf._core.server import mark_failed_request
from otel_perf._integrations.asgi import end_sent_response

_patches = Patches("starlette.background")
SYSTEM = "background"
_MAX_NAME = 200


def job_name(func: Any) -> str:
    """``module.qualname`` of a task's function (the wrapped one of a ``functools.partial``)."""
    while isinstance(func, functools.partial):
        func = func.func
    module = getattr(func, "__module__", None) or ""
    qualname = getattr(func, "__qualname__", None) or getattr(type(func), "__qualname__", "task")
    return (f"{module}.{qualname}" if module else str(qualname))[:_MAX_NAME]


def _wrap(jobs: Jobs, runtime: Runtime, original: Callable[[Any], Awaitable[None]]) -> Any:
    async def __call__(self: Any) -> None:
        try:
            end_sent_response()  # a 5xx response with tasks: its request ends before they run
        except Exception as exc:
            guard.internal_error("background.request", exc)
        run = jobs.begin(SYSTEM, job_name(getattr(self, "func", None)))
        if run is None:  # could not start (said once): run the task untouched
            await original(self)
            return
        monitor = runtime.loop_monitor
        task = monitor.current_task() if monitor is not None else None
        request = monitor.requests.get(id(task)) if task is not None else None
        if task is not None:  # the event loop's blocker while it runs: the job
            monitor.requests[id(task)] = run.work
        try:
            await original(self)
        except BaseException as exc:
            mark_failed_request(exc, run.work.context)  # the server's error record: this job's trace
            jobs.end(run, exc)
            raise
        else:
            jobs.end(run)
        finally:
            if task is not None:
                if request is not None:
                    monitor.requests[id(task)] = request
                else:
                    monitor.requests.pop(id(task), None)

    return __call__


def install(runtime: Runtime, background: ModuleType | None) -> None:
    """Wrap ``BackgroundTask.__call__`` (``starlette.background`` was imported)."""
    if background is None or _patches.active:
        return
    jobs = Jobs(runtime)
    _patches.wrap(background.BackgroundTask, "__call__", lambda original: _wrap(jobs, runtime, original))


def uninstall() -> None:
    _patches.restore()
