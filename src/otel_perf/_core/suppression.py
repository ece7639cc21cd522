"""Instrumentation suppressed: the context keys OpenTelemetry's instrumentations share.

``suppress_instrumentation`` (everything: the SDK's exporters run with it; we set it while a
request to an excluded URL is served) and ``suppress_http_instrumentation`` (HTTP clients: a
library under another does not record the same call twice) set keys of the API's context
module that every official instrumentation and ours read.  Their names are private: probe
``api-suppress-keys`` reads them there, without importing opentelemetry-instrumentation's
``utils`` (``wrapt`` and the semantic-convention helpers, about 0.4 MB of RSS for three
context lookups); fallback: the official functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import context
from opentelemetry.context import Context, create_key

from otel_perf._core.probes import forced_off

_EVERYTHING: Any = getattr(context, "_SUPPRESS_INSTRUMENTATION_KEY", None)
_HTTP: Any = getattr(context, "_SUPPRESS_HTTP_INSTRUMENTATION_KEY", None)
#: the "everything" key's old plain-string form, still honoured by the official instrumentations
_PLAIN = "suppress_instrumentation"
#: Probe ``api-suppress-keys``: the API module defines both keys (the official utils module
#: reads them from there too).
_KEYS_HERE = isinstance(_EVERYTHING, str) and isinstance(_HTTP, str) and not forced_off("api-suppress-keys")

#: The "HTTP instrumentation suppressed" key an outgoing call sets while its library sends it;
#: a key of our own if the API moved it.
SUPPRESS_HTTP_KEY: str = _HTTP if isinstance(_HTTP, str) else create_key("suppress_http_instrumentation")


def _http_check() -> Callable[[], bool]:
    """``opentelemetry.instrumentation.utils.is_http_instrumentation_enabled``, or the same test."""
    if not _KEYS_HERE:
        from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled

        return is_http_instrumentation_enabled
    get_value = context.get_value

    def is_http_instrumentation_enabled_here() -> bool:
        return not (get_value(_EVERYTHING) or get_value(_PLAIN) or get_value(_HTTP))

    return is_http_instrumentation_enabled_here


#: Whether HTTP instrumentation runs in the current context (no outer layer suppressed it).
is_http_instrumentation_enabled = _http_check()


def untraced() -> Context:
    """The current context with all instrumentation suppressed (a request to an excluded URL).

    The server adapters run such a request (its app call, and each chunk of a body it
    streams) in it and open no unit: a statement or Redis command it runs has no span to join
    and is dropped where work outside any span would otherwise start a root span or record a
    metric point (:func:`suppressed`); an outgoing call is sent untouched (no span, no
    metric, no ``traceparent``), as by the official HTTP instrumentations.
    """
    if _KEYS_HERE:
        return context.set_value(_EVERYTHING, True)
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        return context.get_current()


def suppressed(ctx: Context) -> bool:
    """Whether instrumentation is suppressed in ``ctx``, the current context (its caller has
    it at hand): an excluded request, an exporter's own work.  Only the no-parent paths of
    statements and commands ask: work inside a measured request pays nothing for it."""
    if _KEYS_HERE:
        return bool(ctx.get(_EVERYTHING) or ctx.get(_PLAIN))
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    return not is_instrumentation_enabled()
