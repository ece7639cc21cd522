"""Stock OpenTelemetry on FastAPI without the ASGI ``http send``/``http receive`` spans.

Runs under ``opentelemetry-instrument`` (distro: SDK, OTLP exporters; the contrib SQLAlchemy
instrumentation auto-loaded) with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=fastapi``: the
contrib FastAPI instrumentation takes ``exclude_spans`` only as an argument of
``instrument_app`` (no environment variable in 0.66b1/b2), so the app is instrumented here.
"""

from __future__ import annotations

from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from app import app

FastAPIInstrumentor.instrument_app(app, exclude_spans=["receive", "send"])

__all__ = ["app"]
