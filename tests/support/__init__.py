"""Shared support for end-to-end tests: a real OTLP/HTTP receiver, child processes, PostgreSQL and
Prometheus. The pytest fixtures built on these live in ``tests/conftest.py``.

Modules: :mod:`.otlp_receiver` (receiver and decoded data classes), :mod:`.procs` (ports, clean env,
:class:`AppProcess`), :mod:`.postgres` and :mod:`.prometheus` (throwaway servers).
"""

from __future__ import annotations

from .otlp_receiver import (
    Exemplar,
    LogRecord,
    MetricPoint,
    OTLPReceiver,
    ReceivedRequest,
    Span,
    SpanEvent,
    SpanLink,
    closed_port,
)
from .postgres import PostgresError, PostgresServer, find_pg_bindir, start_postgres
from .procs import AppProcess, clean_environ, free_port, http_get, in_ci, skip_or_fail
from .prometheus import PrometheusError, PrometheusServer, prometheus_path, promtool_path, start_prometheus

__all__ = [
    "AppProcess",
    "Exemplar",
    "LogRecord",
    "MetricPoint",
    "OTLPReceiver",
    "PostgresError",
    "PostgresServer",
    "PrometheusError",
    "PrometheusServer",
    "ReceivedRequest",
    "Span",
    "SpanEvent",
    "SpanLink",
    "clean_environ",
    "closed_port",
    "find_pg_bindir",
    "free_port",
    "http_get",
    "in_ci",
    "prometheus_path",
    "promtool_path",
    "skip_or_fail",
    "start_postgres",
    "start_prometheus",
]
