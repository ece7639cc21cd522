"""The SDK's extension points: components named in ``OTEL_*`` variables, found by entry point.

As ``opentelemetry.sdk._configuration`` does, an exporter named in
``OTEL_{TRACES,METRICS,LOGS}_EXPORTER``, a sampler in ``OTEL_TRACES_SAMPLER``, an id generator
in ``OTEL_PYTHON_ID_GENERATOR`` and a propagator in ``OTEL_PROPAGATORS`` is whatever an
installed distribution registers under that name in the group below, so anything installed
works (``zipkin_json``, ``xray``, ``jaeger_remote``, a custom sampler).  Our own names
(``otlp``, ``console``, ``none``, ``prometheus``, the SDK's six samplers, ``random``) are
resolved without looking at entry points, so the default configuration never scans them.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

logger = logging.getLogger("otel_perf")

EXPORTER_GROUPS = {
    "traces": "opentelemetry_traces_exporter",
    "metrics": "opentelemetry_metrics_exporter",
    "logs": "opentelemetry_logs_exporter",
}
SAMPLER_GROUP = "opentelemetry_traces_sampler"
ID_GENERATOR_GROUP = "opentelemetry_id_generator"
PROPAGATOR_GROUP = "opentelemetry_propagator"
#: The spec's name, registered by ``opentelemetry-exporter-zipkin`` (protobuf, which needs
#: protobuf 3); with only ``opentelemetry-exporter-zipkin-json`` installed it means that one.
ALIASES = {(EXPORTER_GROUPS["traces"], "zipkin"): "zipkin_json"}


@functools.lru_cache(maxsize=16)
def names(group: str) -> frozenset[str]:
    """Names registered in an entry-point group (read once per process)."""
    from importlib.metadata import entry_points

    try:
        return frozenset(ep.name for ep in entry_points(group=group))
    except Exception:  # a broken distribution's metadata must not stop the start
        logger.debug("reading entry points of %s failed", group, exc_info=True)
        return frozenset()


def resolve(group: str, name: str) -> str | None:
    """The entry-point name ``name`` stands for in ``group``, or None when nothing provides it."""
    if name in names(group):
        return name
    alias = ALIASES.get((group, name))
    if alias is not None and alias in names(group):
        return alias
    return None


def load(group: str, name: str) -> Any:
    """The object registered as ``name`` in ``group`` (LookupError when none is)."""
    from importlib.metadata import entry_points

    resolved = resolve(group, name)
    if resolved is None:
        raise LookupError(f"nothing installed registers {name!r} in entry-point group {group}")
    return next(iter(entry_points(group=group, name=resolved))).load()
