"""Turning one finished unit of work (or query) into findings.

Called for every job and every statement, and for every request past the slow or N+1
threshold (the server core records every request's metrics), sampled or not: metrics, log
records and the stats endpoint therefore see 100% of traffic, while spans follow the sampler.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from otel_perf import _names as n
from otel_perf._analysis.findings import (
    SlowQuery,
    SlowRequest,
    recommend_slow_query,
    recommend_slow_request,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from otel_perf._analysis.sql import Shape
    from otel_perf._core.runtime import Runtime
    from otel_perf._core.work import Work

logger = logging.getLogger("otel_perf")


def display_route(route: str) -> str:
    return route or "(unmatched)"


def request_findings(rt: Runtime, work: Work, route: str, method: str, status: int, seconds: float) -> None:
    """The slow-request and N+1 findings of a finished HTTP request, where it crossed a threshold.

    The server core (:meth:`~otel_perf._core.server.ServerCore.finish`) records the request's
    RED metrics itself and calls this only when one of the two thresholds is reached: most
    requests never get here.
    """
    if seconds >= rt.slow_request_s:
        span = work.span
        _slow_request(rt, work, route, method, status, seconds, span, span.is_recording())
    if work.query_count >= rt.n_plus_one_threshold:
        n_plus_one(rt, work, route, method, display_route(route), f"{method} {display_route(route)}")


def finish_job(rt: Runtime, work: Work, system: str, seconds: float, error_type: str) -> None:
    """Record a finished background job run: duration, statements, N+1 findings inside it."""
    name = work.name
    trace_id, span_id = (work.trace_id, work.span_id) if work.span_id else (0, 0)
    rt.inst.job_duration.record(seconds, (system, name, error_type), trace_id, span_id)
    rt.inst.job_queries.record(work.query_count, (system, name))
    if work.query_count >= rt.n_plus_one_threshold:
        n_plus_one(rt, work, name, system, name, f"{system} job {name}")


def _slow_request(
    rt: Runtime, work: Work, route: str, method: str, status: int, seconds: float, span: Span, recording: bool
) -> None:
    rt.inst.slow_requests.add(1, (route, method))
    if recording:
        span.set_attribute(n.A_PERF_SLOW, True)
    shown = display_route(route)
    duration_ms = seconds * 1000.0
    advice = recommend_slow_request(f"{method} {shown}", work.query_count, work.db_time * 1000.0, duration_ms)
    rt.findings.slow_requests.append(
        SlowRequest(
            shown,
            method,
            round(duration_ms, 3),
            status,
            work.query_count,
            round(work.db_time * 1000.0, 3),
            work.trace_id_hex,
            time.time(),
            advice,
        )
    )
    logger.warning(
        "slow request %s %s took %.1f ms (threshold %.0f ms, %d queries, %.1f ms in SQL) trace_id=%s",
        method,
        shown,
        duration_ms,
        rt.slow_request_s * 1000.0,
        work.query_count,
        work.db_time * 1000.0,
        work.trace_id_hex,
        extra={
            "perf.finding": "slow_request",
            n.A_ROUTE: shown,
            n.A_METHOD: method,
            "perf.duration_ms": round(duration_ms, 3),
            "perf.recommendation": advice,
        },
    )


def n_plus_one(rt: Runtime, work: Work, route: str, method: str, shown: str, where: str) -> None:
    """Report every statement the unit repeated N+ times (requests and measured blocks alike)."""
    repeated = work.repeated(rt.n_plus_one_threshold)
    if not repeated:
        return
    rt.inst.n_plus_one.add(1, (route, method))
    span = work.span
    recording = span.is_recording()
    for statement, count in repeated:
        shape = rt.shapes.shape(statement)
        advice = rt.findings.add_n_plus_one(
            shown, method, statement, count, work.trace_id_hex, shape.collection, work.framework
        )
        if recording:
            span.add_event(n.EVENT_N_PLUS_ONE, {n.A_PERF_STATEMENT: statement, n.A_PERF_REPEAT: count})
        if rt.warn_limiter.allow(("n+1", method, route, statement)):
            logger.warning(
                "N+1 queries in %s: %r ran %d times in one unit of work trace_id=%s",
                where,
                statement,
                count,
                work.trace_id_hex,
                extra={
                    "perf.finding": "n_plus_one",
                    n.A_ROUTE: shown,
                    n.A_METHOD: method,
                    n.A_PERF_STATEMENT: statement,
                    n.A_PERF_REPEAT: count,
                    "perf.recommendation": advice,
                },
            )


def slow_query(rt: Runtime, work: Work | None, shape: Shape, seconds: float, trace_id: str) -> None:
    """Record a statement at or over the slow-query threshold."""
    rt.inst.slow_queries.add(1, (shape.operation, shape.collection))
    duration_ms = seconds * 1000.0
    advice = recommend_slow_query(shape.operation, shape.collection, shape.text)
    where = work.where() if work is not None else ""
    rt.findings.slow_queries.append(
        SlowQuery(
            shape.text,
            shape.operation,
            shape.collection,
            round(duration_ms, 3),
            where,
            trace_id,
            time.time(),
            advice,
        )
    )
    if rt.warn_limiter.allow(("slow-query", shape.text)):
        logger.warning(
            "slow query (%.1f ms, threshold %.0f ms): %s trace_id=%s",
            duration_ms,
            rt.slow_query_s * 1000.0,
            shape.text,
            trace_id,
            extra={
                "perf.finding": "slow_query",
                n.A_PERF_STATEMENT: shape.text,
                n.A_DB_OPERATION: shape.operation,
                n.A_DB_COLLECTION: shape.collection,
                "perf.duration_ms": round(duration_ms, 3),
                "perf.recommendation": advice,
            },
        )
