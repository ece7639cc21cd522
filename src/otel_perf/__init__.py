"""otel-perf-instrument: OpenTelemetry performance monitoring for FastAPI, SQLAlchemy and httpx.

Run your service under ``otel-perf-instrument`` (no code change).  The small public API is
for what auto-instrumentation cannot see:

* :func:`measure` – a span, duration histogram and error count for a named operation,
  as decorator or (async) context manager; attributes named in ``dimensions`` are metric
  attributes too (bounded).
* :func:`counter`, :func:`histogram` – metrics of your own values, with bounded dimensions.
* :func:`current_trace_id` – the trace id of the current request, for your own logs or
  error pages.
"""

from __future__ import annotations

from otel_perf._core.measure import counter, histogram, measure
from otel_perf._version import __version__


def current_trace_id() -> str:
    """Hex trace id of the current span, or ``""`` outside a trace."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.trace_id else ""


__all__ = ["__version__", "counter", "current_trace_id", "histogram", "measure"]
