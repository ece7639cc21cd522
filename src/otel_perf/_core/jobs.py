"""A background job run as its own unit of work, for every job system.

Celery tasks, FastAPI/Starlette ``BackgroundTasks`` run after the response, and later other
job systems: each run is a :class:`Work` of kind ``job``, so its statements count towards
*it* (never the request that queued it), and at its end it becomes
``perf.job.duration`` (by system, job name and error), ``perf.job.queries`` and, when the
job system knows when it was sent, ``perf.job.queue_wait``; N+1 and slow-query findings
name the job.  A span: the adapter's own (the official Celery instrumentation's consumer
span) or one started here as a child of the current context.
"""

from __future__ import annotations

from contextvars import Token
from time import perf_counter
from typing import TYPE_CHECKING, Any

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TraceFlags

from otel_perf import _names as n
from otel_perf._analysis import insight
from otel_perf._core import guard
from otel_perf._core.spans import SpanStarter
from otel_perf._core.work import Work, current_work

if TYPE_CHECKING:
    from otel_perf._core.runtime import Runtime


class JobRun:
    """One job run in progress (what :meth:`Jobs.end` needs)."""

    __slots__ = ("ctx_token", "own_span", "start", "system", "work", "work_token")

    def __init__(
        self, system: str, work: Work, work_token: Token[Work | None], ctx_token: Any, own_span: bool
    ) -> None:
        self.system = system
        self.work = work
        self.work_token = work_token
        self.ctx_token = ctx_token
        self.own_span = own_span
        self.start = perf_counter()


class Jobs:
    """The job recorder of one runtime, shared by every job adapter."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.spans = SpanStarter(runtime.tracer)

    def begin(
        self, system: str, name: str, *, span: trace.Span | None = None, queue_wait: float | None = None
    ) -> JobRun | None:
        """Open a job run; ``span``: the job's span when the adapter has one (else one is started).

        Pair with :meth:`end` (in ``finally``).  Never raises: None when it could not start.
        """
        try:
            own = span is None
            ctx_token = None
            if span is None:
                span = self.spans.start(
                    f"{system} {name}" if system != "celery" else name,
                    None,
                    SpanKind.INTERNAL,
                    lambda: {n.A_JOB_SYSTEM: system, n.A_JOB_NAME: name},
                )
                ctx_token = context.attach(trace.set_span_in_context(span))
            work = Work("job", name, span, self.rt.max_statements, system)
            run = JobRun(system, work, current_work.set(work), ctx_token, own)
            if queue_wait is not None and queue_wait >= 0:
                self.rt.inst.job_queue_wait.record(queue_wait, (system, name))
            return run
        except Exception as exc:
            guard.internal_error("jobs.begin", exc)
            return None

    def adopt(self, run: JobRun, span: trace.Span) -> None:
        """Make ``span`` the run's span from now on (a job system's span that appeared after :meth:`begin`).

        The Celery instrumentation starts its consumer span in a signal handler that may run after
        ours: the run begins with a placeholder and adopts that span before it ends, so the job's
        metrics, exemplars and findings carry the task's trace.  Only for runs begun with a span.
        """
        if run.own_span:
            return
        work = run.work
        ctx = span.get_span_context()
        work.span = span
        work.context = ctx
        work.trace_id = ctx.trace_id
        work.span_id = ctx.span_id if ctx.trace_flags & TraceFlags.SAMPLED else 0

    def end(self, run: JobRun | None, error: BaseException | None = None, error_type: str = "") -> None:
        """Close a job run: metrics, findings, span. Never raises."""
        if run is None:
            return
        seconds = perf_counter() - run.start
        work = run.work
        work.done = True
        try:
            current_work.reset(run.work_token)
        except Exception as exc:  # reset from another context
            guard.internal_error("jobs.reset", exc)
        try:
            if error is not None and not error_type:
                error_type = type(error).__qualname__
            insight.finish_job(self.rt, work, run.system, seconds, error_type)
            span = work.span
            if span.is_recording():
                span.set_attribute(n.A_PERF_QUERY_COUNT, work.query_count)
                span.set_attribute(n.A_PERF_DB_DURATION, work.db_time)
                if run.own_span and error is not None:
                    span.add_event("exception", self.rt.scrubber.exception(error))
                if run.own_span and error_type:
                    span.set_attribute(n.A_ERROR_TYPE, error_type)
                    span.set_status(Status(StatusCode.ERROR))
        except Exception as exc:
            guard.internal_error("jobs.end", exc)
        finally:
            if run.own_span:
                if run.ctx_token is not None:
                    context.detach(run.ctx_token)
                work.span.end()
