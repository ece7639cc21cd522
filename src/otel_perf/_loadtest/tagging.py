"""Tags that make a load test's requests (and so its traces) findable.

Every request carries a W3C ``baggage`` header (``perf.loadtest.run_id=<id>,
perf.loadtest.scenario=<name>``) and a ``User-Agent`` naming the run.  The server's propagator
puts the baggage into the request context, where a baggage span processor (or a collector
attribute rule) can copy it onto spans; independently, the client records the trace id of
the slowest requests from the ``traceresponse`` header the instrumented app returns, so the
report links straight to those traces.
"""

from __future__ import annotations

import re
import secrets
import time
from urllib.parse import quote

from otel_perf import __version__

__all__ = ["BAGGAGE_RUN_ID", "BAGGAGE_SCENARIO", "new_run_id", "tag_headers", "trace_id_of"]

BAGGAGE_RUN_ID = "perf.loadtest.run_id"
BAGGAGE_SCENARIO = "perf.loadtest.scenario"
_TRACERESPONSE = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus random hex, e.g. ``20261123T041500Z-3f9a1c``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def tag_headers(run_id: str, scenario: str) -> dict[str, str]:
    """Headers every request of the run carries."""
    baggage = f"{BAGGAGE_RUN_ID}={quote(run_id, safe='')},{BAGGAGE_SCENARIO}={quote(scenario, safe='')}"
    return {"baggage": baggage, "User-Agent": f"otel-perf-loadtest/{__version__} (run {run_id})"}


def trace_id_of(traceresponse: str | None) -> str:
    """The trace id in a W3C ``traceresponse`` header value, or ``""``."""
    if not traceresponse:
        return ""
    match = _TRACERESPONSE.match(traceresponse.strip().lower())
    return match.group(1) if match else ""
