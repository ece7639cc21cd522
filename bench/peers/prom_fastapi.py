"""prometheus-fastapi-instrumentator on the FastAPI app, as its README shows:
``Instrumentator().instrument(app).expose(app)``.  Metrics only (request counts, sizes and
latency histograms per handler); no tracing, nothing exported (``/metrics`` is not scraped)."""

from __future__ import annotations

from prometheus_fastapi_instrumentator import Instrumentator

from app import app

Instrumentator().instrument(app).expose(app)

__all__ = ["app"]
