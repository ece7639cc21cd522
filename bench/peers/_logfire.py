"""Logfire configured for a local OTLP backend: nothing to Logfire's service, spans, metrics
and logs over OTLP/HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (Logfire's documented way to use
another backend), no console output."""

from __future__ import annotations

import os

import logfire


def configure() -> None:
    logfire.configure(
        send_to_logfire=False,
        service_name=os.environ.get("OTEL_SERVICE_NAME", "bench-logfire"),
        console=False,
    )
